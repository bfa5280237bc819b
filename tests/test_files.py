"""morelib.files: the append-only store keeps every complete record, atomic writes follow the umask."""

import json
import os

from morelib.files import JsonlStore, write_json, write_text


def test_a_torn_line_over_a_mebibyte_is_cut_alone(tmp_path):
    path = tmp_path / "store.jsonl"
    records = [{"id": n, "paid": "answer %d" % n} for n in range(31)]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"id": 31, "paid": "' + "x" * (3 << 20))  # a torn last line of 3 MiB, no newline
    with JsonlStore(path) as store:
        store.append({"id": 32, "paid": "after the repair"})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [*records, {"id": 32, "paid": "after the repair"}]


def test_a_store_holding_only_a_torn_line_is_emptied(tmp_path):
    path = tmp_path / "store.jsonl"
    path.write_text('{"id": 0, "paid": "' + "x" * (2 << 20) + "y")
    with JsonlStore(path):
        pass
    assert path.read_bytes() == b""


def test_atomic_writes_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert write_text(tmp_path / "a.txt", "a").stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        assert write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)
