"""Benchmarks: runnable by anyone, results written under benchmarks/results/.

They run as the plugin's entry points do: masan_recbole.opt_in() (speed patches, the plugin's
console, and the dataset configs for RecBole's models too, so every model of a comparison gets the
same data config)."""

import masan_recbole

masan_recbole.opt_in()
