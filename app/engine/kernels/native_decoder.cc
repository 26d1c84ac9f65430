// GPT-2's forward pass on the CPU with 8-bit weights, for the engine's decoding loop.
//
// A decoding step multiplies a few rows by every weight, so its cost is reading the
// weights: they are held as int8 in blocks of 32 along the input axis with one
// float16 scale per block and output column (8.5 bits a weight, like llama.cpp's
// Q8_0). Each row's activations are quantised to int8 the same way before a matmul,
// so the inner loop is integer multiply-adds; biases, layer norms, attention and the
// key/value pool stay float (the pool in float32 or bfloat16).
//
// One source, three builds: with -mavx2 -mfma -mf16c the inner loops use AVX2
// intrinsics (adding AVX-512 VNNI, the integer dot products use it); without, plain
// C++ does the same operations in the same order. Integer
// sums are exact and every float operation is an explicit multiply, add or fma in a
// fixed order (built with -ffp-contract=off), so all builds give bit-identical
// logits, and a row's logits never depend on the other rows of its batch or on the
// number of threads.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define PG_AVX2 1
#else
#define PG_AVX2 0
#endif
// The third build adds AVX-512 with VNNI for the integer dot products only: two quads
// per instruction and one multiply-add-accumulate instead of three. Integer sums are
// exact, so its logits are the other builds' bit for bit.
#if PG_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define PG_AVX512 1
#else
#define PG_AVX512 0
#endif

namespace {

constexpr int kBlock = 32;     // inputs per quantisation block
constexpr int kGroup = 8;      // output columns packed together
constexpr int kQuads = kBlock / 4;
// One block of one column group: 8 float16 scales, then quads [8][8 columns][4 inputs].
constexpr int kBlockBytes = kGroup * 2 + kBlock * kGroup;
constexpr int kMaxRows = 4;    // rows sharing one pass over a column group
constexpr int kRowBlock = 64;  // rows whose activations stay in cache while every group passes

// ------------------------------------------------------------------ 8 float lanes
// The few vector operations the float loops need, with a scalar twin that
// rounds exactly like the AVX2 instructions.
#if PG_AVX2
struct F8 {
  __m256 v;
};
inline F8 f8_zero() { return {_mm256_setzero_ps()}; }
inline F8 f8_load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline F8 f8_set(float x) { return {_mm256_set1_ps(x)}; }
inline void f8_store(float* p, F8 a) { _mm256_storeu_ps(p, a.v); }
inline F8 f8_add(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 f8_mul(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline F8 f8_fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline F8 f8_bf16(const uint16_t* p) {
  __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))};
}
// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))
inline float f8_sum(F8 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
// f8_sum of eight vectors at once, lane j holding f8_sum(a[j]) bit for bit: the same
// pairs added in the same order, with the vectors transposed along the way.
inline F8 f8_sum8(const F8* a) {
  __m256 s[4];
  for (int j = 0; j < 4; j++)  // [lo(a_j) + hi(a_j) | lo(a_j+4) + hi(a_j+4)]: l0+l4 .. l3+l7
    s[j] = _mm256_add_ps(_mm256_permute2f128_ps(a[j].v, a[j + 4].v, 0x20),
                         _mm256_permute2f128_ps(a[j].v, a[j + 4].v, 0x31));
  // (l0+l4)+(l2+l6) and (l1+l5)+(l3+l7) of two vectors, interleaved.
  __m256 x = _mm256_add_ps(_mm256_unpacklo_ps(s[0], s[1]), _mm256_unpackhi_ps(s[0], s[1]));
  __m256 y = _mm256_add_ps(_mm256_unpacklo_ps(s[2], s[3]), _mm256_unpackhi_ps(s[2], s[3]));
  return {_mm256_add_ps(_mm256_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm256_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)))};
}
#else
struct F8 {
  float v[8];
};
inline F8 f8_zero() { return F8{}; }
inline F8 f8_load(const float* p) { F8 r; std::memcpy(r.v, p, sizeof r.v); return r; }
inline F8 f8_set(float x) { F8 r; for (float& e : r.v) e = x; return r; }
inline void f8_store(float* p, F8 a) { std::memcpy(p, a.v, sizeof a.v); }
inline F8 f8_add(F8 a, F8 b) { for (int i = 0; i < 8; i++) a.v[i] += b.v[i]; return a; }
inline F8 f8_mul(F8 a, F8 b) { for (int i = 0; i < 8; i++) a.v[i] *= b.v[i]; return a; }
inline F8 f8_fma(F8 a, F8 b, F8 c) {
  for (int i = 0; i < 8; i++) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return c;
}
inline F8 f8_bf16(const uint16_t* p) {
  F8 r;
  for (int i = 0; i < 8; i++) {
    uint32_t bits = uint32_t(p[i]) << 16;
    std::memcpy(&r.v[i], &bits, 4);
  }
  return r;
}
inline float f8_sum(F8 a) {
  const float* l = a.v;
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}
inline F8 f8_sum8(const F8* a) {
  F8 r;
  for (int j = 0; j < 8; j++) r.v[j] = f8_sum(a[j]);
  return r;
}
#endif

// float32 -> bfloat16, rounded to nearest even (the values are finite).
inline uint16_t to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return uint16_t(bits >> 16);
}

// ------------------------------------------------------------------ int8 weights
struct QMatrix {
  int k = 0, n = 0;          // [k inputs, n outputs]
  int blocks = 0, groups = 0;
  std::vector<uint8_t> data;  // [groups][blocks][kBlockBytes]

  const uint8_t* block(int group, int b) const {
    return data.data() + (size_t(group) * blocks + b) * kBlockBytes;
  }
};

// Element (i, j) of the float matrix is src[i * stride_k + j * stride_n].
void quantize(QMatrix& m, int k, int n, const float* src, long stride_k, long stride_n) {
  m.k = k;
  m.n = n;
  m.blocks = (k + kBlock - 1) / kBlock;
  m.groups = (n + kGroup - 1) / kGroup;
  m.data.assign(size_t(m.groups) * m.blocks * kBlockBytes, 0);
  for (int g = 0; g < m.groups; g++) {
    for (int b = 0; b < m.blocks; b++) {
      uint8_t* out = m.data.data() + (size_t(g) * m.blocks + b) * kBlockBytes;
      for (int c = 0; c < kGroup; c++) {
        int j = g * kGroup + c;
        if (j >= n) continue;  // padding columns stay zero
        float amax = 0.f;
        for (int i = b * kBlock; i < std::min(k, (b + 1) * kBlock); i++)
          amax = std::max(amax, std::fabs(src[i * stride_k + j * stride_n]));
        _Float16 scale = _Float16(amax / 127.f);
        std::memcpy(out + 2 * c, &scale, 2);
        float inverse = float(scale) > 0.f ? 1.f / float(scale) : 0.f;
        for (int i = b * kBlock; i < std::min(k, (b + 1) * kBlock); i++) {
          float q = std::nearbyint(src[i * stride_k + j * stride_n] * inverse);
          int in_block = i - b * kBlock;
          int8_t value = int8_t(std::max(-127.f, std::min(127.f, q)));
          out[kGroup * 2 + (in_block / 4) * 32 + c * 4 + in_block % 4] = uint8_t(value);
        }
      }
    }
  }
}

// A batch of rows quantised for a matmul: int8 values and one scale per block.
struct QRows {
  int rows = 0, blocks = 0;
  std::vector<int8_t> values;  // [rows][blocks * kBlock]
  std::vector<float> scales;   // [rows][blocks]
};

// fn(r) for each of `rows` rows, split between threads when there are several:
// rows never depend on each other, so the result is the same either way.
template <typename F>
void for_rows(int rows, int threads, F fn) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1)
  for (int r = 0; r < rows; r++) fn(r);
}

void quantize_rows(QRows& q, const float* x, int rows, int k, int threads) {
  q.rows = rows;
  q.blocks = (k + kBlock - 1) / kBlock;
  q.values.assign(size_t(rows) * q.blocks * kBlock, 0);
  q.scales.assign(size_t(rows) * q.blocks, 0.f);
  for_rows(rows, threads, [&](int r) {
    const float* row = x + size_t(r) * k;
    for (int b = 0; b < q.blocks; b++) {
      int end = std::min(k, (b + 1) * kBlock);
      float amax = 0.f;
      for (int i = b * kBlock; i < end; i++) amax = std::max(amax, std::fabs(row[i]));
      float scale = amax / 127.f;
      float inverse = scale > 0.f ? 1.f / scale : 0.f;
      q.scales[size_t(r) * q.blocks + b] = scale;
      int8_t* out = q.values.data() + size_t(r) * q.blocks * kBlock;
      for (int i = b * kBlock; i < end; i++) out[i] = int8_t(std::nearbyint(row[i] * inverse));
    }
  });
}

inline float f16_value(const uint8_t* p) {
  _Float16 h;
  std::memcpy(&h, p, 2);
  return float(h);
}

// y[r][group's 8 columns] = x[r] . W for R rows (R <= kMaxRows).
template <int R>
void group_rows(const QMatrix& w, int group, const QRows& x, int row0, F8* out) {
  const int8_t* xv[R];
  const float* xs[R];
  for (int r = 0; r < R; r++) {
    xv[r] = x.values.data() + size_t(row0 + r) * x.blocks * kBlock;
    xs[r] = x.scales.data() + size_t(row0 + r) * x.blocks;
    out[r] = f8_zero();
  }
  for (int b = 0; b < w.blocks; b++) {
    const uint8_t* blk = w.block(group, b);
#if PG_AVX512
    const __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    // Within each 128-bit lane, bytes 0-3 (the first quad) in the low half of the
    // register and bytes 4-7 (the next quad) in the high half.
    const __m512i spread = _mm512_set_epi32(
        0x07060504, 0x07060504, 0x07060504, 0x07060504, 0x07060504, 0x07060504, 0x07060504, 0x07060504,
        0x03020100, 0x03020100, 0x03020100, 0x03020100, 0x03020100, 0x03020100, 0x03020100, 0x03020100);
    __m512i acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
#pragma GCC unroll 1
    for (int j = 0; j < kQuads; j += 2) {
      // Quads j and j + 1 of the group's 8 columns: |w| unsigned, x takes w's sign.
      __m512i q = _mm512_loadu_si512(blk + kGroup * 2 + j * 32);
      __m512i magnitude = _mm512_abs_epi8(q);
      __mmask64 negative = _mm512_movepi8_mask(q);
      for (int r = 0; r < R; r++) {
        int64_t pair;
        std::memcpy(&pair, xv[r] + b * kBlock + j * 4, 8);
        __m512i x = _mm512_shuffle_epi8(_mm512_set1_epi64(pair), spread);
        __m512i signed_x = _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x);
        acc[r] = _mm512_dpbusd_epi32(acc[r], magnitude, signed_x);
      }
    }
    for (int r = 0; r < R; r++) {
      __m256i sum = _mm256_add_epi32(_mm512_castsi512_si256(acc[r]),
                                     _mm512_extracti64x4_epi64(acc[r], 1));
      __m256 scale = _mm256_mul_ps(wscale, _mm256_set1_ps(xs[r][b]));
      out[r].v = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum), out[r].v);
    }
#elif PG_AVX2
    const __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();
    // Not unrolled: every row's accumulator stays in a register (unrolling the
    // quads made g++ spill them).
#pragma GCC unroll 1
    for (int j = 0; j < kQuads; j++) {
      __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kGroup * 2 + j * 32));
      __m256i magnitude = _mm256_sign_epi8(q, q);
      for (int r = 0; r < R; r++) {
        int32_t quad;
        std::memcpy(&quad, xv[r] + b * kBlock + j * 4, 4);
        // |w| * (x * sign(w)): unsigned times signed, as maddubs needs; no
        // pair of products can saturate 16 bits (2 * 127 * 127 < 32768).
        __m256i signed_x = _mm256_sign_epi8(_mm256_set1_epi32(quad), q);
        __m256i pairs = _mm256_maddubs_epi16(magnitude, signed_x);
        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones));
      }
    }
    for (int r = 0; r < R; r++) {
      __m256 scale = _mm256_mul_ps(wscale, _mm256_set1_ps(xs[r][b]));
      out[r].v = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(acc[r]), out[r].v);
    }
#else
    float wscale[kGroup];
    for (int c = 0; c < kGroup; c++) wscale[c] = f16_value(blk + 2 * c);
    for (int r = 0; r < R; r++) {
      int32_t acc[kGroup] = {0};
      for (int j = 0; j < kQuads; j++) {
        const int8_t* q = reinterpret_cast<const int8_t*>(blk + kGroup * 2 + j * 32);
        const int8_t* xq = xv[r] + b * kBlock + j * 4;
        for (int c = 0; c < kGroup; c++)
          for (int e = 0; e < 4; e++) acc[c] += int32_t(q[c * 4 + e]) * int32_t(xq[e]);
      }
      for (int c = 0; c < kGroup; c++)
        out[r].v[c] = std::fma(wscale[c] * xs[r][b], float(acc[c]), out[r].v[c]);
    }
#endif
  }
}

// y [rows, n] = x [rows, k] . W (+ bias). Columns are split between threads; rows
// are taken kMaxRows at a time over each column group while its weights are in
// cache, in blocks of kRowBlock rows so that a long prompt's activations stay in
// cache too.
void matmul(const QMatrix& w, const QRows& x, const float* bias, float* y, int threads) {
  for (int block0 = 0; block0 < x.rows; block0 += kRowBlock) {
    const int block_end = std::min(x.rows, block0 + kRowBlock);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int g = 0; g < w.groups; g++) {
      F8 out[kMaxRows];
      for (int row0 = block0; row0 < block_end; row0 += kMaxRows) {
        int count = std::min(kMaxRows, block_end - row0);
        switch (count) {
          case 1: group_rows<1>(w, g, x, row0, out); break;
          case 2: group_rows<2>(w, g, x, row0, out); break;
          case 3: group_rows<3>(w, g, x, row0, out); break;
          default: group_rows<4>(w, g, x, row0, out); break;
        }
        int col0 = g * kGroup;
        int width = std::min(kGroup, w.n - col0);
        for (int r = 0; r < count; r++) {
          float lanes[kGroup];
          F8 value = out[r];
          if (bias && width == kGroup) value = f8_add(value, f8_load(bias + col0));
          f8_store(lanes, value);
          float* dst = y + size_t(row0 + r) * w.n + col0;
          for (int c = 0; c < width; c++)
            dst[c] = (bias && width < kGroup) ? lanes[c] + bias[col0 + c] : lanes[c];
        }
      }
    }
  }
}

// ------------------------------------------------------------------ the model
// The key/value pool. calloc takes fresh zero pages from the system, which cost memory
// only once written (std::vector would write every byte), and only places that
// requests write are ever read: a pool sized for many requests grows as they come.
template <typename T>
struct Pool {
  std::unique_ptr<T, decltype(&std::free)> data{nullptr, &std::free};
  bool allocate(size_t n) {
    data.reset(static_cast<T*>(std::calloc(n, sizeof(T))));
    return data != nullptr;
  }
  T& operator[](size_t i) { return data.get()[i]; }
  const T& operator[](size_t i) const { return data.get()[i]; }
};

struct Layer {
  std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b, attn_b, proj_b, fc_b, out_b;
  QMatrix attn, proj, fc, out;
};

struct Model {
  int n_layer, n_embd, n_head, n_vocab, n_ctx, pool, threads;
  bool bf16_cache;
  std::vector<Layer> layers;
  QMatrix wte;                 // [n_embd, n_vocab]: the logits; rows of it are the embeddings
  std::vector<float> wpe, lnf_g, lnf_b;
  // [layer][k|v][head][place][head size]: one head's keys of consecutive places are
  // consecutive, so attention over a sequence's pages reads whole runs of memory.
  Pool<float> cache;           // float32 pool
  Pool<uint16_t> cache16;      // or bfloat16
  // Scratch reused between steps.
  std::vector<float> h, x, big, attended, scores;
  QRows q;
  // Seconds spent per part of the forward pass, while profiling is on (benchmarks).
  bool profiling = false;
  double seconds[4] = {0, 0, 0, 0};

  size_t slot(int layer, int kv, int head, int place) const {
    return (((size_t(layer) * 2 + kv) * n_head + head) * pool + place) * (n_embd / n_head);
  }
};

void layer_norm(const float* in, const std::vector<float>& g, const std::vector<float>& b,
                float* out, int n) {
  float sum = 0.f;
  for (int i = 0; i < n; i++) sum += in[i];
  float mean = sum / n;
  float squares = 0.f;
  for (int i = 0; i < n; i++) squares += (in[i] - mean) * (in[i] - mean);
  float denominator = std::sqrt(squares / n + 1e-5f);
  for (int i = 0; i < n; i++) out[i] = (in[i] - mean) / denominator * g[i] + b[i];
}

inline float gelu(float x) {
  // GPT-2's tanh form; tanh(u) = 1 - 2 / (exp(2u) + 1) keeps to one libm call.
  float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  float t = 1.f - 2.f / (std::exp(2.f * u) + 1.f);
  return 0.5f * x * (1.f + t);
}

void embed(const Model& m, int token, int position, float* out) {
  const QMatrix& w = m.wte;
  int group = token / kGroup, c = token % kGroup;
  for (int b = 0; b < w.blocks; b++) {
    const uint8_t* blk = w.block(group, b);
    float scale = f16_value(blk + 2 * c);
    for (int i = b * kBlock; i < std::min(w.k, (b + 1) * kBlock); i++) {
      int e = i - b * kBlock;
      int8_t q = int8_t(blk[kGroup * 2 + (e / 4) * 32 + c * 4 + e % 4]);
      out[i] = scale * float(q) + m.wpe[size_t(position) * m.n_embd + i];
    }
  }
}

inline F8 load_cached(const Model& m, size_t at) {
  return m.bf16_cache ? f8_bf16(&m.cache16[at]) : f8_load(&m.cache[at]);
}

// One row's keys or values (n_embd of them, head after head) at a place.
void store_cached(Model& m, int layer, int kv, int place, const float* values) {
  const int size = m.n_embd / m.n_head;
  for (int head = 0; head < m.n_head; head++) {
    size_t at = m.slot(layer, kv, head, place);
    const float* from = values + size_t(head) * size;
    if (m.bf16_cache)
      for (int i = 0; i < size; i++) m.cache16[at + i] = to_bf16(from[i]);
    else
      std::memcpy(&m.cache[at], from, sizeof(float) * size);
  }
}

// Attention of one row and head over the places it may see (its own included).
void attend(const Model& m, int layer, int head, const float* query, const int32_t* places,
            int visible, float* scores, float* out) {
  const int size = m.n_embd / m.n_head;
  const int offset = head * size;
  const float scale = 1.f / std::sqrt(float(size));
  F8 qv[16];  // head sizes up to 128
  for (int d = 0; d < size; d += 8) qv[d / 8] = f8_load(query + offset + d);
  float best = -INFINITY;
  int l = 0;
  // Eight places at a time: eight independent chains of multiply-adds, summed together.
  for (; l + 8 <= visible; l += 8) {
    F8 acc[8];
    for (int j = 0; j < 8; j++) {
      size_t at = m.slot(layer, 0, head, places[l + j]);
      acc[j] = f8_zero();
      for (int d = 0; d < size; d += 8) acc[j] = f8_fma(qv[d / 8], load_cached(m, at + d), acc[j]);
    }
    f8_store(scores + l, f8_mul(f8_sum8(acc), f8_set(scale)));
    for (int j = 0; j < 8; j++) best = std::max(best, scores[l + j]);
  }
  for (; l < visible; l++) {
    size_t at = m.slot(layer, 0, head, places[l]);
    F8 acc = f8_zero();
    for (int d = 0; d < size; d += 8) acc = f8_fma(qv[d / 8], load_cached(m, at + d), acc);
    scores[l] = f8_sum(acc) * scale;
    best = std::max(best, scores[l]);
  }
  float total = 0.f;
  for (int l = 0; l < visible; l++) {
    scores[l] = std::exp(scores[l] - best);
    total += scores[l];
  }
  F8 acc[16];
  for (int d = 0; d < size; d += 8) acc[d / 8] = f8_zero();
  for (int l = 0; l < visible; l++) {
    size_t at = m.slot(layer, 1, head, places[l]);
    F8 p = f8_set(scores[l] / total);
    for (int d = 0; d < size; d += 8) acc[d / 8] = f8_fma(p, load_cached(m, at + d), acc[d / 8]);
  }
  for (int d = 0; d < size; d += 8) f8_store(out + offset + d, acc[d / 8]);
}

// Parts of a forward pass, as pg_profile reports them.
enum Part { LAYER_MATMULS = 0, VOCABULARY, ATTENTION, OTHER };

// Adds the time since the last call to one part, when profiling.
struct PartClock {
  Model& m;
  double last;
  explicit PartClock(Model& model) : m(model), last(model.profiling ? omp_get_wtime() : 0) {}
  void charge(Part part) {
    if (!m.profiling) return;
    double now = omp_get_wtime();
    m.seconds[part] += now - last;
    last = now;
  }
};

}  // namespace

// ------------------------------------------------------------------ C interface
extern "C" {

void* pg_create(int n_layer, int n_embd, int n_head, int n_vocab, int n_ctx, int pool,
                int bf16_cache, int threads) {
  if (n_embd % n_head || (n_embd / n_head) % 8 || n_embd / n_head > 128) return nullptr;
  Model* m = new Model();
  m->n_layer = n_layer;
  m->n_embd = n_embd;
  m->n_head = n_head;
  m->n_vocab = n_vocab;
  m->n_ctx = n_ctx;
  m->pool = pool;
  m->threads = threads;
  m->bf16_cache = bf16_cache != 0;
  m->layers.resize(n_layer);
  size_t places = size_t(n_layer) * 2 * pool * n_embd;
  if (!(m->bf16_cache ? m->cache16.allocate(places) : m->cache.allocate(places))) {
    delete m;
    return nullptr;
  }
  return m;
}

void pg_destroy(void* model) { delete static_cast<Model*>(model); }

// Tensor roles, as the Python side names them.
enum Role {
  WTE = 0, WPE, LNF_G, LNF_B, LN1_G, LN1_B, ATTN_W, ATTN_B, PROJ_W, PROJ_B,
  LN2_G, LN2_B, FC_W, FC_B, OUT_W, OUT_B
};

// Matrices arrive as the checkpoint stores them: wte [n_vocab, n_embd], conv1d
// weights [inputs, outputs]. Returns 0, or -1 for an unknown role.
int pg_set(void* model, int layer, int role, const float* data, long rows, long columns) {
  Model& m = *static_cast<Model*>(model);
  auto copy = [&](std::vector<float>& dst) { dst.assign(data, data + rows * columns); };
  if (role == WTE) { quantize(m.wte, int(columns), int(rows), data, 1, columns); return 0; }
  if (role == WPE) { copy(m.wpe); return 0; }
  if (role == LNF_G) { copy(m.lnf_g); return 0; }
  if (role == LNF_B) { copy(m.lnf_b); return 0; }
  if (layer < 0 || layer >= m.n_layer) return -1;
  Layer& l = m.layers[layer];
  switch (role) {
    case LN1_G: copy(l.ln1_g); return 0;
    case LN1_B: copy(l.ln1_b); return 0;
    case LN2_G: copy(l.ln2_g); return 0;
    case LN2_B: copy(l.ln2_b); return 0;
    case ATTN_B: copy(l.attn_b); return 0;
    case PROJ_B: copy(l.proj_b); return 0;
    case FC_B: copy(l.fc_b); return 0;
    case OUT_B: copy(l.out_b); return 0;
    case ATTN_W: quantize(l.attn, int(rows), int(columns), data, columns, 1); return 0;
    case PROJ_W: quantize(l.proj, int(rows), int(columns), data, columns, 1); return 0;
    case FC_W: quantize(l.fc, int(rows), int(columns), data, columns, 1); return 0;
    case OUT_W: quantize(l.out, int(rows), int(columns), data, columns, 1); return 0;
    default: return -1;
  }
}

long pg_weight_bytes(void* model) {
  Model& m = *static_cast<Model*>(model);
  long total = long(m.wte.data.size());
  for (const Layer& l : m.layers)
    total += long(l.attn.data.size() + l.proj.data.size() + l.fc.data.size() + l.out.data.size());
  return total;
}

// Runs `rows` tokens, each at its own position, in one pass over the weights: the
// rows of several sequences, a prompt chunk, a token and its drafts, in any mix.
// Row i writes its key and value at pool place write_at[i] and attends to the
// places read_at[row_seq[i]][0..positions[i]] of its sequence (its own included,
// so a sequence's rows see each other's keys from this same call).
// read_at is [seqs, kv_len]. Logits [outputs, V] come after the rows named by
// output_rows. Returns 0, or -1 for a token, position, place or row out of range.
int pg_forward(void* model, int rows, const int32_t* tokens, const int32_t* positions,
               const int32_t* write_at, const int32_t* row_seq, int seqs, int kv_len,
               const int32_t* read_at, int outputs, const int32_t* output_rows, float* logits) {
  Model& m = *static_cast<Model*>(model);
  const int e = m.n_embd, heads = m.n_head, threads = m.threads;
  if (rows < 1 || outputs < 0 || outputs > rows) return -1;
  for (int i = 0; i < rows; i++) {
    int b = row_seq[i];
    if (b < 0 || b >= seqs || tokens[i] < 0 || tokens[i] >= m.n_vocab || positions[i] < 0 ||
        positions[i] >= m.n_ctx || positions[i] >= kv_len || write_at[i] < 0 || write_at[i] >= m.pool)
      return -1;
    for (int l = 0; l <= positions[i]; l++)
      if (read_at[size_t(b) * kv_len + l] < 0 || read_at[size_t(b) * kv_len + l] >= m.pool) return -1;
  }
  for (int o = 0; o < outputs; o++)
    if (output_rows[o] < 0 || output_rows[o] >= rows) return -1;
  PartClock clock(m);
  m.h.resize(size_t(rows) * e);
  m.x.resize(size_t(rows) * e);
  m.attended.resize(size_t(rows) * e);
  m.big.resize(size_t(rows) * 4 * e);  // the qkv rows (3e), then the MLP (4e)
  m.scores.resize(size_t(std::max(1, threads)) * kv_len);
  for (int i = 0; i < rows; i++) embed(m, tokens[i], positions[i], &m.h[size_t(i) * e]);

  for (int layer = 0; layer < m.n_layer; layer++) {
    Layer& l = m.layers[layer];
    for_rows(rows, threads, [&](int i) {
      layer_norm(&m.h[size_t(i) * e], l.ln1_g, l.ln1_b, &m.x[size_t(i) * e], e);
    });
    quantize_rows(m.q, m.x.data(), rows, e, threads);
    clock.charge(OTHER);
    float* qkv = m.big.data();  // [rows, 3e]
    matmul(l.attn, m.q, l.attn_b.data(), qkv, threads);
    clock.charge(LAYER_MATMULS);
    for (int i = 0; i < rows; i++) {
      store_cached(m, layer, 0, write_at[i], qkv + size_t(i) * 3 * e + e);
      store_cached(m, layer, 1, write_at[i], qkv + size_t(i) * 3 * e + 2 * e);
    }
    const int pairs = rows * heads;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && pairs > 1)
    for (int p = 0; p < pairs; p++) {
      int i = p / heads, head = p % heads, b = row_seq[i];
      float* scores = &m.scores[size_t(omp_get_thread_num()) * kv_len];
      attend(m, layer, head, qkv + size_t(i) * 3 * e, read_at + size_t(b) * kv_len, positions[i] + 1,
             scores, &m.attended[size_t(i) * e]);
    }
    clock.charge(ATTENTION);
    quantize_rows(m.q, m.attended.data(), rows, e, threads);
    clock.charge(OTHER);
    matmul(l.proj, m.q, l.proj_b.data(), m.x.data(), threads);
    clock.charge(LAYER_MATMULS);
    for (size_t i = 0; i < size_t(rows) * e; i++) m.h[i] += m.x[i];

    for_rows(rows, threads, [&](int i) {
      layer_norm(&m.h[size_t(i) * e], l.ln2_g, l.ln2_b, &m.x[size_t(i) * e], e);
    });
    quantize_rows(m.q, m.x.data(), rows, e, threads);
    clock.charge(OTHER);
    float* hidden = m.big.data();  // [rows, 4e]
    matmul(l.fc, m.q, l.fc_b.data(), hidden, threads);
    clock.charge(LAYER_MATMULS);
    for_rows(rows, threads, [&](int r) {
      for (size_t i = size_t(r) * 4 * e; i < size_t(r + 1) * 4 * e; i++) hidden[i] = gelu(hidden[i]);
    });
    quantize_rows(m.q, hidden, rows, 4 * e, threads);
    clock.charge(OTHER);
    matmul(l.out, m.q, l.out_b.data(), m.x.data(), threads);
    clock.charge(LAYER_MATMULS);
    for (size_t i = 0; i < size_t(rows) * e; i++) m.h[i] += m.x[i];
  }

  // Logits only for the rows asked for.
  for (int o = 0; o < outputs; o++)
    layer_norm(&m.h[size_t(output_rows[o]) * e], m.lnf_g, m.lnf_b, &m.x[size_t(o) * e], e);
  clock.charge(OTHER);
  if (outputs == 0) return 0;  // a prompt chunk that is not its prompt's end
  quantize_rows(m.q, m.x.data(), outputs, e, threads);
  matmul(m.wte, m.q, nullptr, logits, threads);
  clock.charge(VOCABULARY);
  return 0;
}

// Profiling for benchmarks: on != 0 starts adding each part's time (and clears
// the sums); seconds[4] receives them (layer matmuls, vocabulary, attention, other).
void pg_profile(void* model, int on, double* seconds) {
  Model& m = *static_cast<Model*>(model);
  if (seconds) std::memcpy(seconds, m.seconds, sizeof m.seconds);
  if (on) std::memset(m.seconds, 0, sizeof m.seconds);
  m.profiling = on != 0;
}

}  // extern "C"
