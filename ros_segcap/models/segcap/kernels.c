/* One-row matrix products over GGUF blocks (Q4_1 and Q8_0), for LLM decode steps on CPU.
 *
 * Built on first use by ros_segcap/core/native.py (cc -O3 -march=native -fopenmp). The
 * block layouts are those of ggml, split into arrays:
 *   Q4_1: per row and block of 32 inputs, 16 bytes qs (low nibble = input j, high nibble =
 *         input j + 16), a scale d and a minimum m (fp32 here); weight = d * q + m.
 *   Q8_0: per row and block, 32 int8 q and a scale d; weight = d * q.
 * So a row's product is sum_b d_b * (q_b . x_b) + m_b * sum(x_b): the same values as the
 * dequantised fp32 weights, read from 6x (Q4_1) or 4x (Q8_0) fewer bytes.
 *
 * Rows are split over OpenMP threads. Loaded after torch, this library binds to torch's own
 * libgomp.so.1 (same soname), so both share one thread pool.
 *
 * SEGCAP_PORTABLE selects plain C loops (any CPU; tests compare it with the vector code).
 */
#include <stdint.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if !defined(SEGCAP_PORTABLE) && defined(__AVX512F__)
#define SEGCAP_AVX512 1
#include <immintrin.h>
#elif !defined(SEGCAP_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
#define SEGCAP_AVX2 1
#include <immintrin.h>
#endif

const char *segcap_kernel_variant(void) {
#if defined(SEGCAP_AVX512)
    return "avx512";
#elif defined(SEGCAP_AVX2)
    return "avx2";
#else
    return "portable";
#endif
}

#if defined(SEGCAP_AVX2)
static inline float hsum256(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}
#endif

/* sum over blocks of d_b * (q_b . x_b) for one Q4_1 row (the m_b terms are added apart) */
static float q4_row(const uint8_t *q, const float *d, const float *x, long nb) {
#if defined(SEGCAP_AVX512)
    const __m512i low = _mm512_set1_epi32(15);
    __m512 acc = _mm512_setzero_ps();
    for (long b = 0; b < nb; b++) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * b)));
        __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, low));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
        __m512 s = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + 32 * b),
                                   _mm512_mul_ps(hi, _mm512_loadu_ps(x + 32 * b + 16)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d[b]), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(SEGCAP_AVX2)
    const __m256i low = _mm256_set1_epi32(15);
    __m256 acc = _mm256_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const uint8_t *qb = q + 16 * b;
        const float *xb = x + 32 * b;
        __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qb));
        __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qb + 8)));
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)),
                                 _mm256_loadu_ps(xb));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)),
                            _mm256_loadu_ps(xb + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)),
                            _mm256_loadu_ps(xb + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)),
                            _mm256_loadu_ps(xb + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d[b]), s, acc);
    }
    return hsum256(acc);
#else
    float acc = 0.f;
    for (long b = 0; b < nb; b++) {
        const uint8_t *qb = q + 16 * b;
        const float *xb = x + 32 * b;
        float s = 0.f;
        for (int j = 0; j < 16; j++)
            s += (float)(qb[j] & 15) * xb[j] + (float)(qb[j] >> 4) * xb[j + 16];
        acc += d[b] * s;
    }
    return acc;
#endif
}

/* sum over blocks of d_b * (q_b . x_b) for one Q8_0 row */
static float q8_row(const int8_t *q, const float *d, const float *x, long nb) {
#if defined(SEGCAP_AVX512)
    __m512 acc = _mm512_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const __m128i *qb = (const __m128i *)(q + 32 * b);
        __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qb)));
        __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qb + 1)));
        __m512 s = _mm512_fmadd_ps(q0, _mm512_loadu_ps(x + 32 * b),
                                   _mm512_mul_ps(q1, _mm512_loadu_ps(x + 32 * b + 16)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d[b]), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
#elif defined(SEGCAP_AVX2)
    __m256 acc = _mm256_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const int8_t *qb = q + 32 * b;
        const float *xb = x + 32 * b;
        __m256 s = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qb + 8 * k)));
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(xb + 8 * k), s);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d[b]), s, acc);
    }
    return hsum256(acc);
#else
    float acc = 0.f;
    for (long b = 0; b < nb; b++) {
        float s = 0.f;
        for (int j = 0; j < 32; j++) s += (float)q[32 * b + j] * x[32 * b + j];
        acc += d[b] * s;
    }
    return acc;
#endif
}

/* t (r) = a (r x cols) . x: the first half of a LoRA adapter */
static void lora_down(const float *a, const float *x, float *t, long r, long cols) {
    for (long k = 0; k < r; k++) {
        float s = 0.f;
        #pragma omp simd reduction(+:s)
        for (long i = 0; i < cols; i++) s += a[k * cols + i] * x[i];
        t[k] = s;
    }
}

/* y (rows) = Q4_1 W (rows x cols) . x (cols) [+ lb (rows x r) . (la (r x cols) . x)].
 * cols must be a multiple of 32; la / lb may be NULL (no adapter; r is then ignored). */
void segcap_gemv_q4_1(const uint8_t *qs, const float *d, const float *m, const float *x,
                      float *y, long rows, long cols, const float *la, const float *lb,
                      long r, int threads) {
    long nb = cols / 32;
    float xsum[nb > 0 ? nb : 1];
    float t[r > 0 ? r : 1];
    for (long b = 0; b < nb; b++) {
        float s = 0.f;
        for (int j = 0; j < 32; j++) s += x[32 * b + j];
        xsum[b] = s;
    }
    int lora = la != NULL && lb != NULL && r > 0;
    if (lora) lora_down(la, x, t, r, cols);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long row = 0; row < rows; row++) {
        const float *mr = m + row * nb;
        float acc = q4_row(qs + row * nb * 16, d + row * nb, x, nb), extra = 0.f;
        #pragma omp simd reduction(+:extra)
        for (long b = 0; b < nb; b++) extra += mr[b] * xsum[b];
        if (lora) {
            const float *lr = lb + row * r;
            #pragma omp simd reduction(+:extra)
            for (long k = 0; k < r; k++) extra += lr[k] * t[k];
        }
        y[row] = acc + extra;
    }
}

/* y (rows) = Q8_0 W (rows x cols) . x (cols); cols a multiple of 32 */
void segcap_gemv_q8_0(const int8_t *qs, const float *d, const float *x, float *y,
                      long rows, long cols, int threads) {
    long nb = cols / 32;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long row = 0; row < rows; row++)
        y[row] = q8_row(qs + row * cols, d + row * nb, x, nb);
}

/* ----- a whole decode step of a Llama over Q4_1 blocks (batch 1) --------------------------
 * The same maths as FastLlama.forward for one token, without a Python call per operation:
 * RMSNorm, fused QKV, RoPE (tables with the rotate-half sign folded into sin), the KV cache
 * write, grouped-query attention over positions 0..pos, output projection, residual,
 * RMSNorm, fused gate/up, SiLU(gate) * up, down projection, residual; the final norm. */
typedef struct {
    const uint8_t *qs;
    const float *d, *m, *la, *lb;
    long rows, cols, r;
} SegcapQ4;

typedef struct {
    const float *ln1, *ln2;
    SegcapQ4 qkv, o, gu, down;
    float *k, *v; /* this layer's cache: (n_kv, max_len, head_dim) */
} SegcapLayer;

typedef struct {
    long n_layers, hidden, n_heads, n_kv, head_dim, ffn, max_len;
    int threads;
    float eps;
    const float *cos, *sin; /* (max_len, head_dim) */
    const float *final_norm;
    const SegcapLayer *layers;
} SegcapModel;

static void q4_apply(const SegcapQ4 *w, const float *x, float *y, int threads) {
    segcap_gemv_q4_1(w->qs, w->d, w->m, x, y, w->rows, w->cols, w->la, w->lb, w->r, threads);
}

static void rms_norm(const float *x, const float *w, float *y, long n, float eps) {
    float ss = 0.f;
    for (long i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.f / sqrtf(ss / (float)n + eps);
    for (long i = 0; i < n; i++) y[i] = x[i] * inv * w[i];
}

static void rope(float *v, const float *cos, const float *sin, long hd) {
    float t[hd];
    for (long j = 0; j < hd; j++) t[j] = v[j] * cos[j] + v[(j + hd / 2) % hd] * sin[j];
    for (long j = 0; j < hd; j++) v[j] = t[j];
}

/* x (hidden) in: the token's embedding; out: its last-layer hidden state after the norm */
void segcap_decode_step(const SegcapModel *mdl, float *x, long pos) {
    const long H = mdl->hidden, hd = mdl->head_dim, nh = mdl->n_heads, nkv = mdl->n_kv;
    const long L = mdl->max_len, group = nh / nkv, n = pos + 1;
    const int th = mdl->threads;
    const float *cs = mdl->cos + pos * hd, *sn = mdl->sin + pos * hd;
    const float scale = 1.f / sqrtf((float)hd);
    float *h = malloc(sizeof(float) * (H + (nh + 2 * nkv) * hd + nh * hd + 2 * mdl->ffn +
                                       nh * n));
    float *qkv = h + H, *att = qkv + (nh + 2 * nkv) * hd, *gu = att + nh * hd;
    float *scores = gu + 2 * mdl->ffn;
    for (long l = 0; l < mdl->n_layers; l++) {
        const SegcapLayer *ly = mdl->layers + l;
        rms_norm(x, ly->ln1, h, H, mdl->eps);
        q4_apply(&ly->qkv, h, qkv, th);
        for (long i = 0; i < nh + nkv; i++) rope(qkv + i * hd, cs, sn, hd);
        for (long i = 0; i < nkv; i++) {
            memcpy(ly->k + (i * L + pos) * hd, qkv + (nh + i) * hd, sizeof(float) * hd);
            memcpy(ly->v + (i * L + pos) * hd, qkv + (nh + nkv + i) * hd, sizeof(float) * hd);
        }
        #pragma omp parallel for num_threads(th) schedule(static)
        for (long i = 0; i < nh; i++) {
            const float *q = qkv + i * hd;
            const float *kc = ly->k + (i / group) * L * hd, *vc = ly->v + (i / group) * L * hd;
            float *s = scores + i * n, mx = -INFINITY, sum = 0.f;
            for (long p = 0; p < n; p++) {
                float dot = 0.f;
                for (long j = 0; j < hd; j++) dot += q[j] * kc[p * hd + j];
                s[p] = dot * scale;
                if (s[p] > mx) mx = s[p];
            }
            for (long p = 0; p < n; p++) { s[p] = expf(s[p] - mx); sum += s[p]; }
            float *o = att + i * hd;
            for (long j = 0; j < hd; j++) o[j] = 0.f;
            for (long p = 0; p < n; p++) {
                float wgt = s[p] / sum;
                for (long j = 0; j < hd; j++) o[j] += wgt * vc[p * hd + j];
            }
        }
        q4_apply(&ly->o, att, h, th);
        for (long i = 0; i < H; i++) x[i] += h[i];
        rms_norm(x, ly->ln2, h, H, mdl->eps);
        q4_apply(&ly->gu, h, gu, th);
        for (long i = 0; i < mdl->ffn; i++) {
            float g = gu[i];
            gu[i] = g / (1.f + expf(-g)) * gu[mdl->ffn + i];
        }
        q4_apply(&ly->down, gu, h, th);
        for (long i = 0; i < H; i++) x[i] += h[i];
    }
    rms_norm(x, mdl->final_norm, h, H, mdl->eps);
    memcpy(x, h, sizeof(float) * H);
    free(h);
}
