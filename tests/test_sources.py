"""The JSON Lines source: stripes of a file, and how a file's end drains."""

from __future__ import annotations

from orderwatch.pipelines.decoding import Chunk, decode_chunk
from orderwatch.pipelines.sources import JsonlSource
from orderwatch.pipelines.watermark import DRAIN_STEPS


def read_all(source: JsonlSource, part: str) -> list[Chunk]:
    partition = source.build_part("input", part, None)
    chunks: list[Chunk] = []
    try:
        while True:
            chunks.extend(partition.next_batch())
    except StopIteration:
        return chunks


def test_a_file_ends_with_empty_chunks_counting_its_drain_down(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"a\nb\nc\n")
    chunks = read_all(JsonlSource([str(path)], batch_size=2), str(path))
    assert [(c.first_position, c.records, c.ended, c.draining) for c in chunks] == [
        (1, [b"a", b"b"], False, 0), (3, [b"c"], True, DRAIN_STEPS - 1),
        *[(4, [], True, left) for left in reversed(range(DRAIN_STEPS - 1))]]


def test_stripes_deal_out_blocks_of_lines_and_keep_the_files_line_numbers(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"".join(b"line%d\n" % n for n in range(1, 11)) + b"not json\n")
    source = JsonlSource([str(path)], batch_size=3, stripes=2)
    assert source.list_parts() == [f"{path}#1/2", f"{path}#2/2"]
    seen = {}
    for part in source.list_parts():
        for chunk in read_all(source, part):
            assert chunk.partition == part and chunk.partitions == 2
            for k, record in enumerate(chunk.records):
                seen[chunk.first_position + k] = (record, part)
    assert seen == {n: (b"line%d" % n if n < 11 else b"not json",
                        f"{path}#{1 + (n - 1) // 3 % 2}/2") for n in range(1, 12)}
    # lines are not JSON: stripe 2's second block (lines 10-11) gives two dead letters,
    # which name the file, not the stripe, with the file's line numbers
    second = read_all(source, f"{path}#2/2")[1]
    assert [(d.source, d.position) for d in decode_chunk(second).dead] == \
        [(str(path), 10), (str(path), 11)]


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(tmp_path):
    """Windows editors save UTF-8 with a BOM; the first event must not be a dead letter."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\xef\xbb\xbf{"b": 2}\n')
    chunks = read_all(JsonlSource([str(path)], batch_size=10), str(path))
    # only the file's first bytes are a BOM; one inside the file is the line's problem
    assert chunks[0].records == [b'{"a": 1}', b'\xef\xbb\xbf{"b": 2}']
    assert chunks[0].first_position == 1
