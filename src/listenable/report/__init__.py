"""Reports: figures (matplotlib, headless) and a static, listenable web gallery."""

from listenable.report.gallery import (
    build_gallery,
    class_page_name,
    page_slug,
    read_manifest_rows,
)

__all__ = ["build_gallery", "class_page_name", "page_slug", "read_manifest_rows"]
