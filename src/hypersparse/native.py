"""C kernels compiled on first use with the system C compiler: a compacted Linear chain in one call, direct
sparse convolution (:class:`hypersparse.sparse_conv.SparseConv2d`), and the HyperSparse gradient in one pass.

At batch 1 a compacted chain costs a few microseconds of arithmetic but
about 2 µs of dispatch per PyTorch operation (reshape, gather, addmm, relu,
...). One C function that walks the CSR rows of every layer in turn has one
call's overhead instead. It needs a C compiler (``$CC``, else ``cc``) the
first time; the library is cached under ``$HYPERSPARSE_CACHE`` (default
``~/.cache/hypersparse``), keyed by its source. That folder must be private
(created 0700, refused if another user owns it or others may write to it);
the library's SHA-256 is recorded when it is built and checked before every
load, and a missing, changed or symbol-less library is built again. Without
a compiler the kernel is unavailable and :func:`hypersparse.sparse_inference`
uses PyTorch's, saying why once.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    int64_t layers, in_features, max_width;
    const int64_t *width;          /* width[0]: input features; width[l + 1]: units of layer l */
    const int64_t *const *rowptr;  /* layer l as CSR over the previous layer's units (layer 0: the input features) */
    const int64_t *const *cols;
    const float *const *vals;
    const float *const *bias;
    const int32_t *relu;
} hs_chain;

int hs_chain_forward(const hs_chain *c, const float *x, int64_t n, float *out)
{
    float *buf = (float *)malloc(sizeof(float) * 2 * (size_t)(c->max_width > 0 ? c->max_width : 1));
    if (!buf) return 1;
    int64_t out_width = c->width[c->layers];
    for (int64_t s = 0; s < n; ++s) {
        const float *in = x + s * c->in_features;
        for (int64_t l = 0; l < c->layers; ++l) {
            float *o = l == c->layers - 1 ? out + s * out_width : buf + (l % 2) * c->max_width;
            const int64_t *rp = c->rowptr[l], *ci = c->cols[l];
            const float *v = c->vals[l], *b = c->bias[l];
            for (int64_t r = 0; r < c->width[l + 1]; ++r) {
                float acc = 0.0f;
                for (int64_t k = rp[r]; k < rp[r + 1]; ++k) acc += v[k] * in[ci[k]];
                acc += b[r];
                o[r] = c->relu[l] && acc < 0.0f ? 0.0f : acc;  /* NaN stays NaN, as torch.relu */
            }
            in = o;
        }
    }
    free(buf);
    return 0;
}

typedef struct {
    int64_t in_size, out_ch, oplane, ow, in_row, sw;  /* floats per input sample; output plane; input row step */
    const int64_t *rowptr;            /* kept weights of output channel o: rowptr[o] .. rowptr[o + 1] - 1 */
    const int64_t *off;               /* each kept weight's first input element, from the sample's start */
    const int32_t *y0, *rows, *x0, *cols;  /* and the block of output pixels it reaches */
    const float *vals, *bias;
    int32_t relu;
} hs_conv;

/* Direct sparse convolution (Park et al. 2017): each kept weight adds a shifted input plane times a scalar.
   The block each weight reaches inside the padding is precomputed, so the loop does no index arithmetic but
   pointer steps. res (or NULL) is added before the ReLU: a residual block's sum in the same pass. */
void hs_conv_forward(const hs_conv *c, const float *x, int64_t n, float *out, const float *res)
{
    for (int64_t s = 0; s < n; ++s) {
        const float *xs = x + s * c->in_size;
        for (int64_t o = 0; o < c->out_ch; ++o) {
            const int64_t at = (s * c->out_ch + o) * c->oplane;
            float *restrict y = out + at;
            const float b = c->bias[o];
            if (res)
                for (int64_t i = 0; i < c->oplane; ++i) y[i] = b + res[at + i];
            else
                for (int64_t i = 0; i < c->oplane; ++i) y[i] = b;
            for (int64_t k = c->rowptr[o]; k < c->rowptr[o + 1]; ++k) {
                const float v = c->vals[k];
                const float *restrict in = xs + c->off[k];
                float *restrict yr = y + (int64_t)c->y0[k] * c->ow + c->x0[k];
                const int32_t nr = c->rows[k], nc = c->cols[k];
                if (c->sw == 1)
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) yr[j] += v * in[j];
                else
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) yr[j] += v * in[j * c->sw];
            }
            if (c->relu)
                for (int64_t i = 0; i < c->oplane; ++i) y[i] = y[i] < 0.0f ? 0.0f : y[i];  /* NaN stays NaN */
        }
    }
}

/* The gradients of hs_conv_forward (no ReLU, no residual) for training a sparse convolution: gx += the input's
   gradient (the forward loop transposed), gv += each kept weight's gradient. gx and gv must be zeroed first. */
void hs_conv_backward_input(const hs_conv *c, const float *gy, int64_t n, float *gx)
{
    for (int64_t s = 0; s < n; ++s) {
        float *xs = gx + s * c->in_size;
        for (int64_t o = 0; o < c->out_ch; ++o) {
            const float *g = gy + (s * c->out_ch + o) * c->oplane;
            for (int64_t k = c->rowptr[o]; k < c->rowptr[o + 1]; ++k) {
                const float v = c->vals[k];
                float *restrict in = xs + c->off[k];
                const float *restrict yr = g + (int64_t)c->y0[k] * c->ow + c->x0[k];
                const int32_t nr = c->rows[k], nc = c->cols[k];
                if (c->sw == 1)
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) in[j] += v * yr[j];
                else
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) in[j * c->sw] += v * yr[j];
            }
        }
    }
}

void hs_conv_backward_weight(const hs_conv *c, const float *x, const float *gy, int64_t n, float *gv)
{
    for (int64_t s = 0; s < n; ++s) {
        const float *xs = x + s * c->in_size;
        for (int64_t o = 0; o < c->out_ch; ++o) {
            const float *g = gy + (s * c->out_ch + o) * c->oplane;
            for (int64_t k = c->rowptr[o]; k < c->rowptr[o + 1]; ++k) {
                const float *restrict in = xs + c->off[k];
                const float *restrict yr = g + (int64_t)c->y0[k] * c->ow + c->x0[k];
                const int32_t nr = c->rows[k], nc = c->cols[k];
                float acc = 0.0f;
                if (c->sw == 1)
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) acc += yr[j] * in[j];
                else
                    for (int32_t r = 0; r < nr; ++r, yr += c->ow, in += c->in_row)
                        for (int32_t j = 0; j < nc; ++j) acc += yr[j] * in[j * c->sw];
                gv[k] += acc;
            }
        }
    }
}

/* tanh as Eigen's and XLA's fast float tanh: a 13/6 rational on [-7.9053, 7.9053] (a few ulp), clamped outside */
static inline float hs_tanh(float x)
{
    const float c = 7.90531110763549805f;
    x = x > c ? c : (x < -c ? -c : x);
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
}

/* HyperSparse in one pass over a float32 tensor: g += coef sign(w) sech^2(s|w|) (skipped when g is NULL), and for
   each block of 4096 entries, out[3 k .. 3 k + 2] = its sum |w|, sum tanh(s|w|) and count of |w| < t. The caller
   adds the blocks in a fixed order, so the sums do not depend on how the blocks were split across threads. */
void hs_hypersparse(const float *restrict w, float *restrict g, int64_t n, float s, float t, float coef, double *out)
{
    const int64_t block = 4096;
    for (int64_t b = 0; b < n; b += block, out += 3) {
        const int64_t e = b + block < n ? b + block : n;
        float l1 = 0.0f, total = 0.0f;
        int32_t below = 0;
        if (g) {
            #pragma omp simd reduction(+:l1, total, below)
            for (int64_t i = b; i < e; ++i) {
                const float a = fabsf(w[i]), th = hs_tanh(s * a);
                l1 += a; total += th; below += a < t;
                g[i] += coef * (float)((w[i] > 0.0f) - (w[i] < 0.0f)) * (1.0f - th * th);
            }
        } else {
            #pragma omp simd reduction(+:l1, total, below)
            for (int64_t i = b; i < e; ++i) {
                const float a = fabsf(w[i]);
                l1 += a; total += hs_tanh(s * a); below += a < t;
            }
        }
        out[0] = l1; out[1] = total; out[2] = below;
    }
}

/* The same pass fused with SGD's step (weight decay wd, momentum mom with dampening 0, no Nesterov), in the order
   torch.optim.SGD applies them: d = g + coef sign(w) sech^2(s|w|) + wd w; buf = d on the first step, else
   mom buf + d; w -= lr buf (buf is NULL without momentum: w -= lr d). g is read, not written. The sums are those
   of the weights before the step, as hs_hypersparse's. One pass instead of the HyperSparse pass and the optimizer's
   four. The three cases are three loops: a branch inside one would keep it from being vectorized. */
#define HS_SGD_LOOP(STEP)                                                                          \
    _Pragma("omp simd reduction(+:l1, total, below)")                                              \
    for (int64_t i = b; i < e; ++i) {                                                              \
        const float x = w[i], a = fabsf(x), th = hs_tanh(s * a);                                   \
        l1 += a; total += th; below += a < t;                                                      \
        const float d = (g[i] + coef * (float)((x > 0.0f) - (x < 0.0f)) * (1.0f - th * th)) + wd * x; \
        STEP                                                                                       \
    }

void hs_hypersparse_sgd(float *restrict w, const float *restrict g, float *restrict buf, int64_t n, float s, float t,
                        float coef, float lr, float wd, float mom, int32_t first, double *out)
{
    const int64_t block = 4096;
    for (int64_t b = 0; b < n; b += block, out += 3) {
        const int64_t e = b + block < n ? b + block : n;
        float l1 = 0.0f, total = 0.0f;
        int32_t below = 0;
        if (!buf) {
            HS_SGD_LOOP(w[i] = x - lr * d;)
        } else if (first) {
            HS_SGD_LOOP(buf[i] = d; w[i] = x - lr * d;)
        } else {
            HS_SGD_LOOP(const float m = mom * buf[i] + d; buf[i] = m; w[i] = x - lr * m;)
        }
        out[0] = l1; out[1] = total; out[2] = below;
    }
}

/* SGD's step alone, for the tensors HyperSparse does not regularize and for dense epochs: d = g + wd w, then
   momentum and update as above. One pass instead of torch's four (and its calls). */
#define HS_PLAIN_LOOP(STEP)                                                                        \
    _Pragma("omp simd")                                                                            \
    for (int64_t i = 0; i < n; ++i) {                                                              \
        const float x = w[i], d = g[i] + wd * x;                                                   \
        STEP                                                                                       \
    }

void hs_sgd(float *restrict w, const float *restrict g, float *restrict buf, int64_t n, float lr, float wd,
            float mom, int32_t first)
{
    if (!buf) {
        HS_PLAIN_LOOP(w[i] = x - lr * d;)
    } else if (first) {
        HS_PLAIN_LOOP(buf[i] = d; w[i] = x - lr * d;)
    } else {
        HS_PLAIN_LOOP(const float m = mom * buf[i] + d; buf[i] = m; w[i] = x - lr * m;)
    }
}
"""


class ChainSpec(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int64), ("in_features", ctypes.c_int64), ("max_width", ctypes.c_int64),
                ("width", ctypes.c_void_p), ("rowptr", ctypes.c_void_p), ("cols", ctypes.c_void_p),
                ("vals", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("relu", ctypes.c_void_p)]


class ConvSpec(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("in_size", "out_ch", "oplane", "ow", "in_row", "sw")] \
        + [(name, ctypes.c_void_p) for name in ("rowptr", "off", "y0", "rows", "x0", "cols", "vals", "bias")] \
        + [("relu", ctypes.c_int32)]


FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")
# for this machine's vector units (the cache key holds its CPU), SIMD loops without a threading runtime, and no errno
# or trap bookkeeping in the math (not -ffast-math, which would turn on flush-to-zero for the whole process)
TUNED = ("-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math")
_lib = None
_error: str | None = None
# name: (return type, argument types)
SYMBOLS = {"hs_chain_forward": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]),
           "hs_conv_forward": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                      ctypes.c_void_p]),
           "hs_conv_backward_input": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]),
           "hs_conv_backward_weight": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                              ctypes.c_void_p]),
           "hs_hypersparse": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_float,
                                     ctypes.c_float, ctypes.c_void_p]),
           "hs_hypersparse_sgd": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                                         ctypes.c_float, ctypes.c_int32, ctypes.c_void_p]),
           "hs_sgd": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float,
                             ctypes.c_float, ctypes.c_float, ctypes.c_int32])}


def _cache_dir() -> Path:
    if os.environ.get("HYPERSPARSE_CACHE"):
        return Path(os.environ["HYPERSPARSE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG base directory spec: a relative path is invalid and is ignored (it would put the cache wherever you are)
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "hypersparse"


def _private(cache: Path) -> Path:
    """``cache``, created 0700; OSError if another user owns it or others may write to it."""
    if cache.exists() and not cache.is_dir():
        raise OSError(f"{cache} is not a folder; point HYPERSPARSE_CACHE at a folder (or unset it)")
    if cache.is_symlink() and not cache.exists():
        raise OSError(f"{cache} is a symbolic link to {os.readlink(cache)}, which does not exist; point "
                      "HYPERSPARSE_CACHE at a folder (or unset it)")
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = cache.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise OSError(f"{cache} belongs to another user (uid {st.st_uid}); use a folder of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(f"{cache} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 700 it")
    return cache


def _own_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file, not a symbolic link, owned by this user and writable by no one
    else (checked on the open descriptor, so it cannot be swapped in between); OSError otherwise."""
    # O_NONBLOCK: a FIFO in its place would block the open until someone writes to it (fstat refuses it next)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise OSError(f"{path} belongs to another user (uid {st.st_uid})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile(cc: list[str], cache: Path, record: Path) -> Path:
    """Build the library into ``cache`` under a name holding its SHA-256, then record that digest. The build folder
    is a registered temporary: a signal that ends the process at once removes it, and one left by a process that
    died is removed by the next build."""
    from hypersparse.checkpoint import remove_temporaries, temporary, temporary_name

    remove_temporaries(cache)
    tmp = temporary_name(cache / "build")
    with temporary(tmp):
        try:
            tmp.mkdir(mode=0o700)
            src, built = tmp / "chain.c", tmp / "chain.so"
            src.write_text(SOURCE)
            for flags in (FLAGS + TUNED, FLAGS):  # a compiler without the tuning flags still builds the plain library
                done = subprocess.run([*cc, *flags, str(src), "-o", str(built)], capture_output=True, text=True,
                                      timeout=120)
                if done.returncode == 0:
                    break
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]  # the compiler's verdict
                raise OSError(f"{' '.join(cc)} failed: {last[:200]}")
            digest = _sha256(built)
            so = cache / f"{record.stem}-{digest[:16]}.so"
            os.chmod(built, 0o700)  # ours alone, whatever the umask: a library others may write is never loaded
            os.replace(built, so)  # atomic: another process may be loading the same name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    tmp_record = temporary_name(record)
    fd = os.open(tmp_record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp_record, record)
    return so


def _verified(record: Path) -> Path | None:
    """The recorded library if the record and the library are this user's own files (:func:`_own_file`) and the
    library's bytes still have the recorded SHA-256, else None (missing, changed or someone else's)."""
    try:
        digest = _own_file(record).decode("ascii").strip()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        so = record.with_name(f"{record.stem}-{digest[:16]}.so")
        return so if hashlib.sha256(_own_file(so)).hexdigest() == digest else None
    except (OSError, UnicodeDecodeError):
        return None


def _load(so: Path):
    """The library and whether it has every symbol (each given its signature)."""
    lib = ctypes.CDLL(str(so))
    for name, (restype, argtypes) in SYMBOLS.items():
        fn = getattr(lib, name, None)
        if fn is None:
            return lib, False
        fn.argtypes, fn.restype = argtypes, restype
    return lib, True


def _build() -> ctypes.CDLL:
    """Load the cached library if it is the one this user built (SHA-256 checked first), else build it anew."""
    cc = shlex.split(os.environ.get("CC", "cc")) or ["cc"]
    key = hashlib.sha256(f"{SOURCE}\0{cc}\0{FLAGS}{TUNED}\0{platform.machine()}\0{platform.system()}\0{_cpu()}"
                         .encode()).hexdigest()[:16]
    cache = _private(_cache_dir())
    record = cache / f"chain-{key}.sha256"
    so = _verified(record)
    if so is not None:
        lib, complete = _load(so)
        if complete:
            return lib
    lib, complete = _load(_compile(cc, cache, record))  # missing, changed or without a symbol: built again
    if not complete:
        raise OSError(f"the library built by {' '.join(cc)} lacks {' or '.join(SYMBOLS)}")
    return lib


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (a library built for one CPU is not
    loaded on another that shares the cache folder)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "|".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))


def _library():
    global _lib, _error
    if _lib is None and _error is None:
        try:
            _lib = _build()
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            _error = (f"the C kernel is unavailable ({exc}); it needs a C compiler ($CC, else cc) and a private "
                      f"cache directory ($HYPERSPARSE_CACHE, now {_cache_dir()})")
    return _lib


def chain_kernel():
    """The compiled ``hs_chain_forward(spec, x, n, out)``, or None if it cannot be built (see :func:`unavailable`)."""
    lib = _library()
    return lib.hs_chain_forward if lib is not None else None


def conv_kernel():
    """The compiled ``hs_conv_forward(spec, x, n, out, residual)``, or None if it cannot be built (see
    :func:`unavailable`)."""
    lib = _library()
    return lib.hs_conv_forward if lib is not None else None


_pool = None


def thread_pool(n: int):
    """A pool of at least ``n`` threads for C calls that split their work (ctypes lets go of the GIL)."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    if _pool is None or _pool._max_workers < n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="hypersparse")
    return _pool


def conv_backward_kernels():
    """The compiled ``(hs_conv_backward_input, hs_conv_backward_weight)``, or None if they cannot be built."""
    lib = _library()
    return (lib.hs_conv_backward_input, lib.hs_conv_backward_weight) if lib is not None else None


def hypersparse_kernel():
    """The compiled ``hs_hypersparse(w, g, n, s, t, coef, out)`` (see :class:`hypersparse.HyperSparse`), or None."""
    lib = _library()
    return lib.hs_hypersparse if lib is not None else None


def hypersparse_sgd_kernel():
    """The compiled ``hs_hypersparse_sgd(w, g, buf, n, s, t, coef, lr, wd, momentum, first, out)``: the HyperSparse
    pass fused with SGD's step (:meth:`hypersparse.HyperSparse.step_sgd_`), or None."""
    lib = _library()
    return lib.hs_hypersparse_sgd if lib is not None else None


def sgd_kernel():
    """The compiled ``hs_sgd(w, g, buf, n, lr, weight_decay, momentum, first)``: SGD's step for one float32 tensor
    (:func:`hypersparse.regularizers.native_sgd_step_`), or None."""
    lib = _library()
    return lib.hs_sgd if lib is not None else None


def unavailable() -> str | None:
    """Why the C kernel cannot be used, or None if it can."""
    _library()
    return _error
