"""Coding: the .cgic bytes. The container (header and sections), the Huffman streams, what the index streams
carry, the mask section and the lossless alpha record; docs/format.md is their specification. No torch here."""
