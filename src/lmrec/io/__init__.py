"""Reading data in: CSV / TSV / Parquet / RecBole atomic importers and the sample datasets."""

from lmrec.io.importers import ImportOptions, ImportReport, import_files, read_file

__all__ = ["ImportOptions", "ImportReport", "import_files", "read_file"]
