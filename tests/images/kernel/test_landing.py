"""The landing contract's pieces: manifests, describing a day file, the hashing reader."""
import gzip
import hashlib
import io
import json

import pytest

from criteo_kernel import landing

pytestmark = pytest.mark.unit

LINES = b"".join(b"1\t2\tab\n" for _ in range(1000))


def test_describe_counts_rows_bytes_and_sha256_of_plain_and_gzip(tmp_path):
    (tmp_path / "day_0").write_bytes(LINES)
    gz = gzip.compress(LINES)
    (tmp_path / "day_1.gz").write_bytes(gz)
    (tmp_path / "day_2").write_bytes(gz)  # gzip content under a plain name: still described right
    (tmp_path / "day_3").write_bytes(LINES + b"1\t2")  # a last line without its newline is a row
    assert landing.describe(str(tmp_path / "day_0")) == landing.Manifest(1000, len(LINES),
                                                                         hashlib.sha256(LINES).hexdigest())
    assert landing.describe(str(tmp_path / "day_1.gz")) == landing.Manifest(1000, len(gz),
                                                                            hashlib.sha256(gz).hexdigest())
    assert landing.describe(str(tmp_path / "day_2")).rows == 1000
    assert landing.describe(str(tmp_path / "day_3")).rows == 1001


def test_write_and_read_manifest(tmp_path):
    day = tmp_path / "day_4"
    day.write_bytes(LINES)
    assert landing.read_manifest(str(day)) is None
    written = landing.write_manifest(str(day))
    assert json.loads((tmp_path / "day_4.manifest.json").read_text()) == written.to_dict()
    assert landing.read_manifest(str(day)) == written
    assert landing.file_sha256(str(day)) == written.sha256


@pytest.mark.parametrize("text, problem", [
    ("not json", "not JSON"),
    ("[1]", "expected a JSON object"),
    ('{"rows": "10"}', "field 'rows' is '10'; expected int"),
    ('{"rows": true}', "field 'rows' is True"),
    ('{"sha256": "XYZ"}', "not 64 lowercase hex digits"),
    ("{}", "names none of rows, bytes, sha256"),
])
def test_a_broken_manifest_is_named_with_its_problem(text, problem):
    with pytest.raises(ValueError, match=problem) as err:
        landing.Manifest.parse("gs://b/raw/day_1.manifest.json", text)
    assert str(err.value).startswith("gs://b/raw/day_1.manifest.json: ")


def test_hashing_reader_hashes_what_passes_and_keeps_the_last_byte():
    reader = landing.HashingReader(io.BytesIO(LINES))
    while reader.read(333):
        pass
    assert reader.hexdigest() == hashlib.sha256(LINES).hexdigest()
    assert reader.bytes_read == len(LINES) and reader.last_byte == b"\n"
    plain = landing.HashingReader(io.BytesIO(b"abc"), hashing=False)
    buf = bytearray(8)
    assert plain.readinto(buf) == 3 and plain.last_byte == b"c" and plain.hexdigest() is None
