"""clip.simple_tokenizer and clip.tokenize: same ids as open_clip's copy of OpenAI's tokenizer."""
import pytest
import torch

import clip
from clip.simple_tokenizer import SimpleTokenizer

open_clip = pytest.importorskip("open_clip")

# Class names in the style of the CoOp benchmarks (written for this test).
CLASS_NAMES = [
    # Caltech101
    "accordion", "airplane", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai",
    "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon", "car_side", "ceiling_fan",
    "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish",
    "crocodile_head", "dalmatian", "dollar_bill", "dolphin", "dragonfly", "electric_guitar",
    "face", "leopard", "motorbike", "yin_yang", "windsor_chair", "wild_cat",
    # OxfordPets
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "Bengal",
    "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "great_pyrenees", "keeshond",
    "Maine_Coon", "miniature_pinscher", "newfoundland", "Ragdoll", "Russian_Blue",
    "saint_bernard", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
    # StanfordCars
    "2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Aston Martin V8 Vantage Convertible",
    "2012 BMW M3 Coupe", "2007 Chevrolet Express Cargo Van", "2012 Ferrari 458 Italia Coupe",
    "2012 Mercedes-Benz SL-Class Coupe", "1993 Volvo 240 Sedan", "2012 smart fortwo Convertible",
    # OxfordFlowers
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "globe thistle",
    "snapdragon", "colt's foot", "king protea", "spear thistle", "bishop of llandaff",
    # Food101
    "apple_pie", "baby_back_ribs", "beef_tartare", "crème brûlée", "eggs_benedict", "pho",
    "spaghetti_carbonara", "takoyaki", "tiramisu", "huevos_rancheros",
    # FGVCAircraft
    "707-320", "727-200", "737-900", "A300B4", "ATR-42", "BAE 146-200", "Cessna 172", "DC-3",
    "F/A-18", "Falcon 2000", "MD-87", "Tu-154", "Yak-42", "DHC-1",
    # SUN397
    "abbey", "airport_terminal", "amusement_park", "bakery/shop", "bathroom", "cathedral/indoor",
    "dinette/home", "field/cultivated", "volcano", "wine_cellar/barrel_storage",
    # DTD
    "banded", "blotchy", "braided", "bubbly", "cobwebbed", "crosshatched", "interlaced",
    "paisley", "zigzagged",
    # EuroSAT
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
    "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
    "River", "Sea or Lake",
    # UCF101
    "Apply_Eye_Makeup", "Apply_Lipstick", "Baby_Crawling", "Balance_Beam", "Blow_Dry_Hair",
    "Body_Weight_Squats", "Hula_Hoop", "Jumping_Jack", "Playing_Daf", "Yo_Yo",
    # ImageNet
    "tench", "goldfish", "great white shark", "jack-o'-lantern", "Granny Smith",
    "African bush elephant", "toilet paper", "T-shirt", "yellow lady's slipper", "hen-of-the-woods",
]

MISC = [
    "", "   ", "X", "X X X X", "a photo of a", "itap of a {}.",
    "Hello, World!!! How's it going? I'm fine; you'd think so... (really) [yes] {no} <tag>",
    "Café naïve résumé façade Ångström Zürich", "ÀÉÎÕÜ àéîõü ñ ç ß ø æ œ",
    "北京大学 東京 서울 中文字符", "こんにちは世界", "Привет, мир", "γειά σου κόσμε", "مرحبا بالعالم",
    "emoji 🙂😀🐶🚗 👍🏽 family 👨‍👩‍👧 flags 🇫🇷", "math ∑∫√∞ ≤ ≥ ± × ÷ °C",
    "fish &amp; chips", "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &amp;amp;",
    "tab\tand\nnewline\r\n  multiple   spaces", "mojibake: cafÃ© and â€œquotesâ€\x9d",
    "numbers 0 1 12 123 3.14159 1,000,000 2e10 -42 1/2 50% #1 $9.99 €5",
    "e-mail: someone@example.com URL https://example.com/a_b?c=d&e=f",
    "don't won't can't it's we're they've I'll she'd", "ALL CAPS SHOUTING", "MiXeD cAsE",
    "under_score-and-hyphen.and.dots", "a" * 40, "supercalifragilisticexpialidocious",
    "zero\u200bwidth", "non\u00a0breaking",
]

CORPUS = CLASS_NAMES + MISC + [f"a photo of a {name.replace('_', ' ')}." for name in CLASS_NAMES]

LONG = " ".join(["a very long caption"] * 30)


@pytest.fixture(scope="module")
def ours():
    return SimpleTokenizer()


@pytest.fixture(scope="module")
def reference():
    return open_clip.tokenizer.SimpleTokenizer()


def test_corpus_is_varied():
    assert len(CLASS_NAMES) >= 100 and len(CORPUS) >= 230


def test_encode_matches_open_clip(ours, reference):
    mismatches = [t for t in CORPUS if ours.encode(t) != reference.encode(t)]
    assert not mismatches


def test_tokenize_matches_open_clip():
    tokens = clip.tokenize(CORPUS)
    assert tokens.dtype == torch.long and tokens.shape == (len(CORPUS), 77)
    assert torch.equal(tokens, open_clip.tokenize(CORPUS))


def test_vocabulary(ours, reference):
    assert len(ours.encoder) == 49408 == len(reference.encoder)
    assert ours.encoder["<|startoftext|>"] == ours.sot_token == 49406
    assert ours.encoder["<|endoftext|>"] == ours.eot_token == 49407
    specials = {"<|startoftext|>", "<|endoftext|>"}
    assert all(reference.encoder[k] == v for k, v in ours.encoder.items() if k not in specials)
    assert all(ours.decoder[v] == k for k, v in ours.encoder.items())


def test_known_ids(ours):
    # facts CoOp-family prompt learners rely on
    assert ours.encode("X") == [343]
    assert ours.encode("X X X X") == [343] * 4
    assert len(ours.encode("a photo of a")) == 4
    assert len(ours.encode("itap of a")) == 4
    assert ours.encode("dog.")[-1] == 269
    row = clip.tokenize("a photo of a dog.")[0]
    n = len(ours.encode("a photo of a dog."))
    assert row[0] == 49406 and row[n + 1] == 49407 and row.argmax() == n + 1
    assert (row[n + 2:] == 0).all()


def test_decode_round_trip(ours):
    for text in CORPUS:
        cleaned = ours.clean(text)
        decoded = ours.decode(ours.encode(text))
        # decode separates words with spaces; compare with whitespace removed
        assert decoded.replace(" ", "") == cleaned.replace(" ", ""), text
    assert ours.decode(ours.encode("a photo of a dog.")).strip() == "a photo of a dog ."
    assert ours.decode(torch.tensor(ours.encode("fish &amp; chips"))).strip() == "fish & chips"


def test_special_tokens_in_text(ours):
    # OpenAI's tokenizer maps the literal special-token strings to their ids; open_clip >= 3
    # renamed its special tokens (<start_of_text>), so this is checked against OpenAI's behaviour.
    assert ours.encode("<|startoftext|>") == [49406]
    assert ours.encode("<|endoftext|> in the middle") == [49407, 530, 518, 3694]
    assert ours.encode("in the middle") == [530, 518, 3694]


def test_cleaning(ours):
    assert ours.encode("  Fish   &amp;\tCHIPS ") == ours.encode("fish & chips")


def test_too_long_text():
    with pytest.raises(RuntimeError, match="a very long caption .* is too long for context length 77"):
        clip.tokenize(["short", LONG])
    tokens = clip.tokenize(["short", LONG], truncate=True)
    assert tokens.shape == (2, 77)
    assert tokens[1, -1] == 49407 and tokens[1, 0] == 49406 and (tokens[1] != 0).all()
    assert torch.equal(tokens, open_clip.tokenize(["short", LONG]))   # open_clip truncates
    # the limit is exact: 75 text tokens fit, 76 do not
    assert clip.tokenize(" ".join(["x"] * 75))[0, -1] == 49407
    with pytest.raises(RuntimeError):
        clip.tokenize(" ".join(["x"] * 76))


def test_context_length_and_single_string():
    tokens = clip.tokenize("a dog", context_length=8)
    assert tokens.tolist() == [[49406, 320, 1929, 49407, 0, 0, 0, 0]]
    assert tokens.tolist() == open_clip.tokenize("a dog", context_length=8).tolist()
