import json

import pytest

from datagen.charset import Charset
from datagen.errors import DatagenError


def test_files_in_the_original_encoding(tmp_path):
  cs = Charset.from_texts(["更上一层楼", "原上草"])
  cs.write(tmp_path)
  assert (tmp_path / "chinese.txt").read_text(encoding="utf-8").splitlines() == sorted("更上一层楼原草")
  d = tmp_path / "char_dict"
  char_dict = json.loads((d / "char_dict.json").read_text(encoding="utf-8"))
  o2i = json.loads((d / "ord_2_index_map.json").read_text(encoding="utf-8"))
  i2o = json.loads((d / "index_2_ord_map.json").read_text(encoding="utf-8"))
  assert char_dict["21407"] == "原"                       # {"21407": "原"}
  assert o2i["21407"] == str(cs.chars.index("原"))        # {"21407": "0"}-style: strings
  assert i2o[o2i["21407"]] == "21407"                     # {"0": "21407"}
  for m in (char_dict, o2i, i2o):
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
  assert Charset.read(tmp_path) == cs


def test_order_is_code_point_order_whatever_the_input_order():
  a = Charset.from_texts(["更上一层楼", "民以食为天"])
  b = Charset.from_texts(["天为食以民", "楼层一上更"])
  assert a.chars == b.chars == sorted(a.chars)


def test_reads_maps_written_with_ascii_escapes(tmp_path):
  # The original's json.dump used ensure_ascii=True: "\u539f".  Same content, must read back.
  cs = Charset.from_texts(["原上草"])
  cs.write(tmp_path)
  p = tmp_path / "char_dict" / "char_dict.json"
  p.write_text(json.dumps(json.loads(p.read_text(encoding="utf-8"))), encoding="utf-8")
  assert "\\u" in p.read_text() and Charset.read(tmp_path) == cs


def test_encode_decode_and_model_classes():
  cs = Charset.from_texts(["一二三"])
  assert cs.encode("三一") == [cs.chars.index("三"), cs.chars.index("一")]
  assert cs.decode(cs.encode("一二三")) == "一二三"
  assert cs.num_classes == 4  # + the CTC blank, class 0


def test_disagreeing_map_is_an_error(tmp_path):
  Charset.from_texts(["一二三"]).write(tmp_path)
  p = tmp_path / "char_dict" / "ord_2_index_map.json"
  m = json.loads(p.read_text(encoding="utf-8"))
  m[str(ord("一"))] = "2"
  p.write_text(json.dumps(m), encoding="utf-8")
  with pytest.raises(DatagenError, match="ord_2_index_map.json disagrees"):
    Charset.read(tmp_path)


def test_unknown_character_is_named():
  with pytest.raises(DatagenError, match="'龍'"):
    Charset.from_texts(["一二"]).encode("一龍")
