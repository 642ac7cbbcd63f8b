from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch

from tests.vera_core import philox_reference
from vera_core import PEFT_GENERATOR, PORTABLE_GENERATOR, ProjectionSpec, fingerprint, generate
from vera_core.errors import UnknownGeneratorError, VeraConfigError
from vera_core.projection import (
    FINGERPRINT_MAGIC,
    PHILOX_KAT,
    philox4x32_10,
    projection_blocks,
    regenerated_fingerprint,
)

SHAPES = [(1, 1, 1), (8, 32, 32), (16, 48, 32), (5, 7, 13), (64, 130, 257)]


@pytest.mark.parametrize(("ctr", "key", "want"), PHILOX_KAT, ids=["zeros", "ones", "pi"])
def test_philox_matches_random123_known_answers(
    ctr: tuple[int, ...], key: tuple[int, int], want: tuple[int, ...]
) -> None:
    c0, c1 = torch.tensor([ctr[0]]), torch.tensor([ctr[1]])
    assert tuple(int(w) for w in philox4x32_10(c0, c1, ctr[2], ctr[3], *key)) == want
    np_words = philox_reference.philox4x32_10(tuple(np.array([c], dtype=np.uint64) for c in ctr), key)
    assert tuple(int(w[0]) for w in np_words) == want


@pytest.mark.parametrize("seed", [0, 1, 2**32 + 5, 2**64 - 1])
@pytest.mark.parametrize(("r", "max_in", "max_out"), SHAPES, ids=[str(s) for s in SHAPES])
def test_portable_generator_equals_the_numpy_reference_bit_for_bit(
    seed: int, r: int, max_in: int, max_out: int
) -> None:
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, seed, r, max_in, max_out))
    ref_a, ref_b = philox_reference.projections(seed, r, max_in, max_out)
    assert a.dtype == b.dtype == torch.float32
    assert np.array_equal(a.numpy().view(np.uint32), ref_a.view(np.uint32))
    assert np.array_equal(b.numpy().view(np.uint32), ref_b.view(np.uint32))


def test_portable_generator_test_vectors_from_the_spec() -> None:
    """The values printed in docs/projections.md, so another implementation can check itself."""
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 0, 4, 8, 8))
    assert [f"{v:.9g}" for v in a[0, :4].tolist()] == DOC_A_ROW0
    assert [f"{v:.9g}" for v in b[0, :4].tolist()] == DOC_B_ROW0
    assert fingerprint(a, b) == DOC_FINGERPRINT


DOC_A_ROW0 = ["-0.174856722", "0.659080267", "0.408266485", "0.182699844"]
DOC_B_ROW0 = ["0.0408553071", "1.07693791", "-1.08025765", "0.0379913524"]
DOC_FINGERPRINT = "e3af87501de4bdc522773f4208d01a579f7ae1233ac4bccfbaab0c9fe1a2b17d"


def test_portable_projection_windows_are_prefixes_of_larger_draws() -> None:
    """Raw draws depend on (row, column) only: a smaller matrix is a rescaled window of a larger one."""
    small_a, small_b = generate(ProjectionSpec(PORTABLE_GENERATOR, 3, 8, 24, 40))
    big_a, big_b = generate(ProjectionSpec(PORTABLE_GENERATOR, 3, 16, 96, 64))
    scale_a = (24 / 96) ** 0.5
    torch.testing.assert_close(small_a, big_a[:8, :24] / scale_a, rtol=2e-7, atol=0)
    assert torch.equal(torch.sign(small_b), torch.sign(big_b[:40, :8]))


def test_portable_distribution_is_kaiming_uniform() -> None:
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 11, 256, 1024, 512))
    bound_a, bound_b = (6 / 1024) ** 0.5, (6 / 256) ** 0.5
    assert a.abs().max() <= bound_a and b.abs().max() <= bound_b
    assert abs(a.mean().item()) < 0.01 * bound_a
    assert a.std().item() == pytest.approx(bound_a / 3**0.5, rel=0.01)
    assert b.std().item() == pytest.approx(bound_b / 3**0.5, rel=0.01)
    assert not torch.equal(a, generate(ProjectionSpec(PORTABLE_GENERATOR, 12, 256, 1024, 512))[0])


def test_peft_generator_reproduces_the_reference_values_in_peft_notes() -> None:
    a, b = generate(ProjectionSpec(PEFT_GENERATOR, 0, 256, 4096, 4096))
    assert a[0, :4].tolist() == pytest.approx([-0.000286545168, 0.020531455, -0.031500638, -0.028166799], abs=1e-9)
    assert b[0, :4].tolist() == pytest.approx([0.048715543, -0.044196665, 0.093534790, -0.128451988], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 7, 123456789])
@pytest.mark.parametrize(("r", "max_in", "max_out"), SHAPES[1:], ids=[str(s) for s in SHAPES[1:]])
def test_peft_generator_is_bit_identical_to_peft(seed: int, r: int, max_in: int, max_out: int) -> None:
    from peft.tuners.vera.model import _kaiming_init

    gen = torch.Generator(device="cpu").manual_seed(seed)
    want_a = _kaiming_init((r, max_in), generator=gen)
    want_b = _kaiming_init((max_out, r), generator=gen)
    a, b = generate(ProjectionSpec(PEFT_GENERATOR, seed, r, max_in, max_out))
    assert torch.equal(a, want_a) and torch.equal(b, want_b)


def test_fingerprint_follows_the_documented_layout() -> None:
    a, b = generate(ProjectionSpec(PORTABLE_GENERATOR, 5, 3, 10, 6))
    digest = hashlib.sha256(FINGERPRINT_MAGIC)
    for mat in (a, b):
        digest.update(struct.pack("<QQ", *mat.shape))
        digest.update(mat.numpy().astype("<f4").tobytes(order="C"))
    assert fingerprint(a, b) == digest.hexdigest()
    assert fingerprint(a.to(torch.float64), b) == digest.hexdigest()  # values, not storage dtype
    flipped = a.clone()
    flipped[0, 0] = torch.nextafter(flipped[0, 0], torch.tensor(1.0))
    assert fingerprint(flipped, b) != digest.hexdigest()
    assert fingerprint(a.t().contiguous().t(), b) == digest.hexdigest()  # layout is row-major whatever the strides


def test_generators_differ_and_thread_count_does_not_matter() -> None:
    spec = ProjectionSpec(PORTABLE_GENERATOR, 0, 8, 64, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generate(spec)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, generate(spec), strict=True))
    assert not torch.equal(one[0], generate(ProjectionSpec(PEFT_GENERATOR, 0, 8, 64, 64))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("generator", [PORTABLE_GENERATOR, PEFT_GENERATOR])
def test_cuda_projections_equal_cpu_bit_for_bit(generator: str) -> None:
    spec = ProjectionSpec(generator, 42, 64, 300, 200)
    cpu = generate(spec)
    cuda = generate(spec, device="cuda")
    assert all(torch.equal(x, y.cpu()) for x, y in zip(cpu, cuda, strict=True))


def test_bad_specs_are_refused_clearly() -> None:
    with pytest.raises(UnknownGeneratorError, match="Unknown projection generator 'mt19937'"):
        ProjectionSpec("mt19937", 0, 4, 4, 4)
    with pytest.raises(VeraConfigError, match="r must be a positive integer"):
        ProjectionSpec(PORTABLE_GENERATOR, 0, 0, 4, 4)
    # an integer: 1.5 failed inside the generator with a TypeError, True passed as seed 1 (a docs audit, session 54)
    for seed in (-1, 1.5, True, "3"):
        with pytest.raises(VeraConfigError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\], got "):
            ProjectionSpec(PORTABLE_GENERATOR, seed, 4, 4, 4)  # type: ignore[arg-type]
    with pytest.raises(VeraConfigError, match="max_in must be a positive integer, got True"):
        ProjectionSpec(PORTABLE_GENERATOR, 0, 4, True, 4)


@pytest.mark.parametrize("generator", [PEFT_GENERATOR, PORTABLE_GENERATOR])
@pytest.mark.parametrize("block_elements", [1, 37, 1 << 18])
def test_projection_blocks_are_the_matrices_bit_for_bit(generator: str, block_elements: int) -> None:
    """Row blocks of A and B (what a streamed export writes) concatenate to generate()'s matrices exactly, for
    block sizes down to a row at a time and shapes whose width is not a multiple of Philox's 4 words."""
    for r, max_in, max_out in [(4, 7, 9), (16, 33, 17), (64, 384, 1536)]:
        spec = ProjectionSpec(generator, 1234, r, max_in, max_out)
        a, b = generate(spec)
        a_blocks, b_blocks = projection_blocks(spec, block_elements)
        got_a, got_b = torch.cat(list(a_blocks)), torch.cat(list(b_blocks))
        assert torch.equal(got_a.view(torch.int32), a.view(torch.int32))
        assert torch.equal(got_b.view(torch.int32), b.view(torch.int32))
        rows = max(1, block_elements // max_in)
        assert all(len(block) <= rows for block in projection_blocks(spec, block_elements)[0])  # bounded pieces


@pytest.mark.parametrize("generator", [PEFT_GENERATOR, PORTABLE_GENERATOR])
def test_the_fingerprint_hashed_block_by_block_is_the_fingerprint_of_the_matrices(generator: str) -> None:
    """What publish and verify compute without holding A and B (regenerated_fingerprint) is fingerprint() of the
    matrices generate() gives; another seed gives another."""
    for r, max_in, max_out in [(4, 7, 9), (64, 384, 1536), (8, 5000, 60)]:
        spec = ProjectionSpec(generator, 99, r, max_in, max_out)
        assert regenerated_fingerprint(spec) == fingerprint(*generate(spec))
        assert regenerated_fingerprint(ProjectionSpec(generator, 98, r, max_in, max_out)) != fingerprint(
            *generate(spec))


def test_peft_generator_blocks_refuse_b_before_a() -> None:
    """PEFT's generator draws B where A's stream ends: reading B first would give other matrices, so it is refused."""
    _, b_blocks = projection_blocks(ProjectionSpec(PEFT_GENERATOR, 1, 4, 8, 8))
    with pytest.raises(RuntimeError, match="read all of A's blocks first"):
        next(b_blocks)
