"""dbgov's benchmarks: `python -m bench` (`make bench`) and the modules it runs."""
