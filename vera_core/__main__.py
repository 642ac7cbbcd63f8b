"""`python -m vera_core`: which vera_core and torch this is, and whether the portable projection generator gives
the documented bits (docs/projections.md, test vectors) on every device torch sees: the CPU and each CUDA device.
Exit 0 when every device agrees, 1 otherwise. The registry's command line is `vera` (or `python -m registry`)."""

from __future__ import annotations

import sys

#: docs/projections.md, "Test vectors": (seed, r, max_in, max_out) -> fingerprint of the portable generator's A, B.
TEST_VECTORS = {
    (0, 4, 8, 8): "e3af87501de4bdc522773f4208d01a579f7ae1233ac4bccfbaab0c9fe1a2b17d",
    (2**32 + 5, 16, 64, 48): "68da1bb7c94fc58d21d56b1df47e978cad6783bcfb1e5739e46e85c2291f995d",
}


def main() -> int:
    import torch

    from vera_core import PORTABLE_GENERATOR, ProjectionSpec, __version__, fingerprint, generate

    devices = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    print(f"vera_core {__version__}, torch {torch.__version__}; devices: {', '.join(devices)}")
    failures = 0
    for device in devices:
        for (seed, r, max_in, max_out), want in TEST_VECTORS.items():
            try:
                got = fingerprint(*generate(ProjectionSpec(PORTABLE_GENERATOR, seed, r, max_in, max_out), device))
            except Exception as exc:  # a self-test refusal or a broken device: report it, check the others
                got = f"error: {exc}"
            ok = got == want
            failures += not ok
            print(f"  {device}: portable generator, seed {seed}, r={r}, {max_in}x{max_out}: "
                  + ("ok" if ok else f"MISMATCH ({got}, expected {want})"))
    print("all devices give the documented projection bits" if not failures else
          f"{failures} check(s) failed: adapters regenerated here would not match; do not use this device")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
