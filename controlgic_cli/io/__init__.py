"""Images and files in and out: reading any image into 8-bit RGB and writing decoded ones, the metadata a file
keeps, the colour under transparent pixels, and atomic, no-clobber output files."""
