from .registry import Registry, check_availability
from .tools import check_isfile, listdir_nohidden, mkdir_if_missing, read_json, tolist_if_not, write_json
