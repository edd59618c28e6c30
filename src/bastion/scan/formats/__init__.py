"""One module per artifact format; each scans a ByteSource and reports into a ScanContext."""
