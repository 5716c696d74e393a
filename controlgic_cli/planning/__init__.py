"""Planning and rate: which patches get which granularity and how many bytes that costs. Patch scores (entropy or
measured), ratios, exact sizes along the rate path, the --quality scale, the --tune and --planner choices, and the
encoder-side refinement of --tune psnr."""
