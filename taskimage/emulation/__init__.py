"""qemu user emulation: binfmt_misc handlers and the probe that proves a foreign platform runs."""
