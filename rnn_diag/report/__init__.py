"""The HTML report of a sweep: figures (pure ``DataFrame -> Figure`` functions), findings in
plain words, and one self-contained page. It reads only the stored tables of a run."""
