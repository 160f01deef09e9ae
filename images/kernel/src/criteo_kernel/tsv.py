"""Reading and writing raw Criteo days: TSV, no header, no quoting, plain or gzip.

Every field is read as text (the validation gate decides what is malformed); a line without
exactly 40 fields goes to the caller's `invalid_row_handler`.
"""
from __future__ import annotations

from .schema import COLUMNS


def text_schema():
    """The 40 raw columns, all strings."""
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in COLUMNS])


def open_day(url: str):
    """A raw day file (local or gs://) for reading bytes; `.gz` is decompressed on the fly."""
    import fsspec

    return fsspec.open(url, "rb", compression="gzip" if url.endswith(".gz") else None)


def reader(fh, invalid_row_handler=None, block_bytes: int = 64 << 20, use_threads: bool = True):
    """A streaming pyarrow CSV reader of a raw day's bytes: record batches of 40 text columns.

    With use_threads=False the invalid-row handler sees rows in file order with their line numbers.
    """
    import pyarrow.csv as pacsv

    return pacsv.open_csv(
        fh,
        read_options=pacsv.ReadOptions(column_names=COLUMNS, block_size=block_bytes, use_threads=use_threads),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, invalid_row_handler=invalid_row_handler),
        convert_options=pacsv.ConvertOptions(column_types=text_schema(), strings_can_be_null=False,
                                             quoted_strings_can_be_null=False),
    )


def write_table(table, sink) -> None:
    """Write a table of text columns in the raw format (tab-separated, no header, no quoting) to a
    path or a binary file object.

    pyarrow's CSV writer leaves fields unquoted only from pyarrow 13 on (`quoting_style`); the merlin
    image's pyarrow 10 would quote every field. There the lines are joined by hand: the columns are
    the raw format's text, which holds no tab, newline or quote to escape.
    """
    import pyarrow.csv as pacsv

    try:
        opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    except TypeError:
        opts = None
    if opts is not None:
        pacsv.write_csv(table, sink, opts)
        return
    import pyarrow.compute as pc

    lines = pc.binary_join_element_wise(*table.columns, "\t").to_pylist()
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    if hasattr(sink, "write"):
        sink.write(data)
    else:
        with open(sink, "wb") as fh:
            fh.write(data)
