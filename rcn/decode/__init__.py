"""rcn-decode: the offline frame decoding tool."""
