"""PyTorch's CPU normal noise in numpy: ``torch.randn(shape, generator=torch.Generator()
.manual_seed(seed))`` without torch.

PyTorch's CPU generator is a 32-bit Mersenne Twister (MT19937) seeded with the low 32 bits of
the seed (the standard ``init_genrand``), the same stream as numpy's legacy
``RandomState(seed)``. A float32 ``randn`` of n >= 16 values draws n uniforms
``u = (r & 0xFFFFFF) / 2^24`` from 32-bit outputs ``r``, then turns every block of 16 into
normals by Box-Muller: for j < 8, ``radius = sqrt(-2 log(1 - u[j]))``, ``theta = 2 pi u[j + 8]``
(float32), ``out[j] = radius cos(theta)``, ``out[j + 8] = radius sin(theta)``. When n is not a
multiple of 16, 16 more uniforms are drawn and the last 16 values are recomputed from them.
Consecutive draws continue the stream, as with one torch generator.

The stream and the rule are exact; torch evaluates log, sin and cos with vectorised
approximations (SLEEF, within 1 ulp), numpy here in float64 rounded to float32, so about one
value in six differs in its last bit (max |difference| ~5e-7 for values up to ~5).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TorchCompatibleNormal"]

_BLOCK = 16
_HALF = _BLOCK // 2
_TWO_PI = np.float32(2 * np.pi)


class TorchCompatibleNormal:
    """A stream of standard normal float32 values equal to one seeded torch CPU generator's.

    Args:
        seed: any integer ``torch.Generator.manual_seed`` accepts.
    """

    def __init__(self, seed: int) -> None:
        self._state = np.random.RandomState(int(seed) & 0xFFFFFFFF)

    def _uniform(self, count: int) -> np.ndarray:
        raw = self._state.randint(0, 2**32, size=count, dtype=np.uint64)
        return (raw & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)

    @staticmethod
    def _box_muller(uniform: np.ndarray) -> np.ndarray:
        blocks = uniform.reshape(-1, _BLOCK)
        u1 = np.float32(1.0) - blocks[:, :_HALF]
        radius = np.sqrt(np.float32(-2.0) * np.log(u1.astype(np.float64)).astype(np.float32))
        theta = (_TWO_PI * blocks[:, _HALF:]).astype(np.float64)
        cos = np.cos(theta).astype(np.float32)
        sin = np.sin(theta).astype(np.float32)
        return np.concatenate([radius * cos, radius * sin], axis=1).reshape(-1)

    def randn(self, *shape: int) -> np.ndarray:
        """The next ``torch.randn(shape)`` of the generator, float32.

        Raises:
            ValueError: fewer than 16 values (torch uses another rule there).
        """
        count = int(np.prod(shape))
        if count < _BLOCK:
            raise ValueError(f"noise of {count} values: at least {_BLOCK} are supported")
        out = np.empty(count, np.float32)
        whole = count // _BLOCK * _BLOCK
        out[:whole] = self._box_muller(self._uniform(count)[:whole])
        if count % _BLOCK:
            out[count - _BLOCK :] = self._box_muller(self._uniform(_BLOCK))
        return out.reshape(shape)
