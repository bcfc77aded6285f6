"""Generated protobuf code (scripts/genproto); never edited by hand."""
