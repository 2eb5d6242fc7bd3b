// Raffel & Ellis's dense layer and feed-forward attention pooling, fused into one sweep over
// each sequence's steps forward and one more backward, for long inputs on the CPU.
//
// For every real step t of a sequence (x_t has F features; D units):
//
//     p_t = W x_t + b,   h_t = LReLU(p_t),   e_t = tanh(w . h_t + c),
//     alpha_t = exp(e_t) / sum_u exp(e_u),   context = sum_t alpha_t h_t
//
// (``mean`` pooling: alpha_t = 1 / L and no scores). Since e_t lies in [-1, 1], exp(e_t) lies
// in [1/e, e] and the softmax needs no running maximum. The kernel takes the steps eight at a
// time (kBlock, for 1-4 input features; one at a time otherwise) and keeps their
// max(p_t, 0) in 8 x D-float buffers that stay in the L1 cache, so nothing of size T x D is
// ever written (the backward pass recomputes them). Sequences are split over torch's threads
// (at::parallel_for): one parallel region per call, not one per small kernel, which is what
// keeps it fast beside a busy process.
//
// Backward, with g = dL/dcontext and s_t = LReLU'(p_t):
//
//     dL/de_t = alpha_t (g . h_t - g . context),   dL/da_t = dL/de_t (1 - e_t^2)
//     dL/dp_t = s_t * (alpha_t g + dL/da_t w)
//     dL/dW = sum_t dL/dp_t x_t^T,  dL/db = sum_t dL/dp_t,  dL/dw = sum_t dL/da_t h_t,
//     dL/dc = sum_t dL/da_t,        dL/dx_t = W^T dL/dp_t
//
// The parameter gradients are summed in float over one sequence, then in double per thread,
// and the threads' sums are added up at the end.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr float kSlope = 0.01f;  // attnlstm.models.common.LEAKY_SLOPE
// Every loop over the D units runs over Dp = D rounded up to kLanes (one register of floats:
// 16 with AVX-512, else 8), on copies of the parameters padded with zeros: a padded unit has
// p = h = 0 and adds nothing to any sum, and the loops need no scalar remainder at every step.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif

inline int64_t padded(int64_t units) { return (units + kLanes - 1) / kLanes * kLanes; }

// rows x cols -> rows x padded(cols), zeros in the new columns
std::vector<float> pad_columns(const torch::Tensor& matrix, int64_t rows, int64_t cols) {
  const int64_t cols_p = padded(cols);
  std::vector<float> out(rows * cols_p, 0.f);
  auto m = matrix.contiguous();
  const float* src = m.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols_p + c] = src[r * cols + c];
  return out;
}


// The dense layer's and the scorer's parameters, padded to Dp units (see kLanes).
struct PaddedParameters {
  int64_t Dp;
  std::vector<float> weight_t;  // W^T, F x Dp
  std::vector<float> bias;      // Dp
  std::vector<float> score;     // w, Dp
};

PaddedParameters pad_parameters(const torch::Tensor& weight, const torch::Tensor& bias,
                                const torch::Tensor& score_weight) {
  const int64_t D = weight.size(0), F = weight.size(1);
  return {padded(D), pad_columns(weight.t(), F, D), pad_columns(bias.reshape({1, D}), 1, D),
          pad_columns(score_weight.reshape({1, D}), 1, D)};
}

// One pass over the units for one step of the generic path (more than 4 input features; 1-4
// take the blocks below): p = W x + b and h = LReLU(p) (both stored), and the dot product
// v . h.
inline float dense_dot(const float* __restrict__ x, const float* __restrict__ weight_t,
                       const float* __restrict__ bias, const float* __restrict__ v, int64_t F,
                       int64_t Dp, float* __restrict__ pre, float* __restrict__ hidden) {
  float total = 0.f;
  for (int64_t d = 0; d < Dp; ++d) {
    float p = bias[d];
    for (int64_t f = 0; f < F; ++f) p += weight_t[f * Dp + d] * x[f];
    const float h = p > 0.f ? p : kSlope * p;
    pre[d] = p;
    hidden[d] = h;
    total += v[d] * h;
  }
  return total;
}


// The generic path's backward sweep over the units for one step, given dL/da_t (grad_act):
// dL/dp_t (into grad_pre) and its sums into the gradients of b, w and W^T (F x Dp).
inline void backward_step(const float* __restrict__ x, const float* __restrict__ pre,
                          const float* __restrict__ hidden, const float* __restrict__ g,
                          const float* __restrict__ w, float alpha, float grad_act, int64_t F,
                          int64_t Dp, float* __restrict__ grad_pre, float* __restrict__ sum_b,
                          float* __restrict__ sum_w, float* __restrict__ sum_W) {
  for (int64_t d = 0; d < Dp; ++d) {
    const float slope = pre[d] > 0.f ? 1.f : kSlope;
    const float grad = slope * (alpha * g[d] + grad_act * w[d]);
    grad_pre[d] = grad;
    sum_b[d] += grad;
    sum_w[d] += grad_act * hidden[d];
  }
  for (int64_t f = 0; f < F; ++f) {
    const float xf = x[f];
    for (int64_t d = 0; d < Dp; ++d) sum_W[f * Dp + d] += grad_pre[d] * xf;
  }
}

// -- eight steps at a time (1-4 input features) ---------------------------------------------
//
// A block of kBlock = 8 steps is one vector in the step direction (Steps): the scores' tanh and
// exp run as one vector exp over the block's steps, not as scalar calls per step. Along the
// units, the leaky ReLU is split into its linear and its rectified part,
//
//     h = kSlope p + (1 - kSlope) r,   r = max(p, 0),   s = LReLU'(p) = kSlope + (1 - kSlope) [r > 0]
//
// and every sum over t of a linear function of p_t is formed from sums of x_t instead (p_t is
// affine in x_t): w . h_t = kSlope (sum_f (W^T w)_f x_tf + w . b) + (1 - kSlope) w . r_t, the
// context's sum_t u_t p_t = W (sum_t u_t x_t) + b sum_t u_t, and the backward pass's sums of
// s_t q_t (1, x_t) with q_t = alpha_t g + dL/da_t w split into scalar sums of alpha_t (1, x_t)
// and dL/da_t (1, x_t) and unit-wise masked sums sum_t [r_t > 0] q_t (1, x_t). Per (step, unit
// vector) that leaves the dense layer (F multiply-adds), one max and one multiply-add forward
// and one more for the context; backward, the same three, then q (2), a compare, F + 1 masked
// sums and one multiply-add: no per-step slope multiplications.

constexpr int64_t kBlock = 8;

// kLanes floats along the units (GCC/Clang vector extensions: AVX-512 or AVX2 under
// -march=native, SSE pairs elsewhere); may_alias and float alignment let it be loaded from any
// float buffer
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float)),
                                 may_alias));
// one float for each of a block's kBlock steps
typedef float Steps __attribute__((vector_size(kBlock * sizeof(float))));
// [r > 0] as a mask, and sums taken only where it is set. With AVX-512 each is one masked
// instruction that writes the sum in place; the portable form zeroes v first (one more).
#if defined(__AVX512F__)
typedef __mmask16 Mask;
inline Mask positive(Vec r) {
  return _mm512_cmp_ps_mask((__m512)r, _mm512_setzero_ps(), _CMP_GT_OQ);
}
inline Vec where(Mask m, Vec v) { return (Vec)_mm512_maskz_mov_ps(m, (__m512)v); }
// acc + [m] v
inline Vec add_where(Mask m, Vec acc, Vec v) {
  return (Vec)_mm512_mask_add_ps((__m512)acc, m, (__m512)acc, (__m512)v);
}
// acc + [m] v scale
inline Vec fma_where(Mask m, Vec acc, Vec v, float scale) {
  return (Vec)_mm512_mask3_fmadd_ps((__m512)v, _mm512_set1_ps(scale), (__m512)acc, m);
}
#else
typedef decltype(Vec{} > Vec{}) Mask;
inline Mask positive(Vec r) { return r > Vec{}; }
inline Vec where(Mask m, Vec v) { return m ? v : Vec{}; }
inline Vec add_where(Mask m, Vec acc, Vec v) { return acc + where(m, v); }
inline Vec fma_where(Mask m, Vec acc, Vec v, float scale) { return acc + where(m, v) * scale; }
#endif

typedef int32_t IntSteps __attribute__((vector_size(kBlock * sizeof(int32_t))));

inline Vec load(const float* p) { return *reinterpret_cast<const Vec*>(p); }

inline void store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

inline float lane_sum(Vec v) {
  float total = 0.f;
  for (int64_t k = 0; k < kLanes; ++k) total += v[k];
  return total;
}

inline Vec broadcast(float value) { return Vec{} + value; }

inline Steps steps_of(float value) { return Steps{} + value; }

// n (<= kBlock) floats from source, zeros after them
inline Steps load_steps(const float* source, int64_t n) {
  Steps out = {};
  if (n == kBlock) {
    std::memcpy(&out, source, sizeof out);
  } else {
    for (int64_t s = 0; s < n; ++s) out[s] = source[s];
  }
  return out;
}

// the first n lanes of v into target
inline void store_steps(float* target, Steps v, int64_t n) {
  if (n == kBlock) {
    std::memcpy(target, &v, sizeof v);
  } else {
    for (int64_t s = 0; s < n; ++s) target[s] = v[s];
  }
}

// a block's sums in double, lane by lane (the rows' totals run over thousands of steps)
typedef double DoubleSteps __attribute__((vector_size(kBlock * sizeof(double))));

inline DoubleSteps widen(Steps v) { return __builtin_convertvector(v, DoubleSteps); }

inline double lane_total(DoubleSteps v) {
  double total = 0.0;
  for (int64_t k = 0; k < kBlock; ++k) total += v[k];
  return total;
}

inline Vec relu(Vec v) {
#if defined(__AVX512F__)
  __m512 m;
  std::memcpy(&m, &v, sizeof m);
  m = _mm512_max_ps(_mm512_setzero_ps(), m);  // maxps returns its second operand for a NaN
  std::memcpy(&v, &m, sizeof v);
  return v;
#elif defined(__AVX__)
  // one vmaxps; the compiler builds the portable form below from a compare and an and
  __m256 m;
  std::memcpy(&m, &v, sizeof m);
  m = _mm256_max_ps(_mm256_setzero_ps(), m);
  std::memcpy(&v, &m, sizeof v);
  return v;
#else
  const Vec zero = {};
  return v < zero ? zero : v;  // a NaN stays NaN
#endif
}

// exp(x) lane by lane, within about 2 float ulp of std::exp (Cephes's expf: x = n ln 2 + r with
// |r| <= ln 2 / 2, a degree-6 polynomial for exp(r), times 2^n); x is clamped to [-87, 88].
inline Steps vector_exp(Steps x) {
  // written so that a NaN fails both tests and stays NaN (a NaN score gives a NaN weight and
  // context, as the plain computation does, rather than a finite one)
  x = x > steps_of(88.f) ? steps_of(88.f) : x;
  x = x < steps_of(-87.f) ? steps_of(-87.f) : x;
  // n = round(x log2 e), by truncating x log2 e +- 1/2 (the usual magic-number rounding,
  // (y + 1.5 2^23) - 1.5 2^23, would be folded away by -fassociative-math)
  const Steps half = x < Steps{} ? steps_of(-0.5f) : steps_of(0.5f);
  const IntSteps n_int = __builtin_convertvector(x * 1.44269504088896341f + half, IntSteps);
  const Steps n = __builtin_convertvector(n_int, Steps);
  Steps r = x - n * 0.693359375f;  // ln 2 in two parts, so that n ln 2 is exact enough
  r = r - n * -2.12194440e-4f;
  Steps poly = steps_of(1.9875691500e-4f);
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const Steps exp_r = poly * r * r + r + 1.f;
  const IntSteps bits = (n_int + 127) << 23;  // 2^n as a float's exponent
  Steps scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return exp_r * scale;
}

// __builtin_shufflevector: Clang, and GCC from 12; older compilers take plain lane loops
// (as does -DATTNLSTM_NO_SHUFFLES, which the tests use to compile that path)
#if defined(__has_builtin) && !defined(ATTNLSTM_NO_SHUFFLES)
#if __has_builtin(__builtin_shufflevector)
#define ATTNLSTM_SHUFFLES 1
#endif
#endif

// {lane_sum(acc[0]), ..., lane_sum(acc[7])} in 7 additions and 14 shuffles (a transpose tree),
// after adding each 16-lane accumulator's halves
inline Steps lane_sums(const Vec* acc) {
#if !defined(ATTNLSTM_SHUFFLES)
  Steps sums;
  for (int64_t s = 0; s < kBlock; ++s) sums[s] = lane_sum(acc[s]);
  return sums;
#else
  Steps eight[kBlock], pairs[4], quads[2];
  for (int64_t s = 0; s < kBlock; ++s) {
    if constexpr (kLanes == 16) {
      eight[s] = __builtin_shufflevector(acc[s], acc[s], 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(acc[s], acc[s], 8, 9, 10, 11, 12, 13, 14, 15);
    } else {
      std::memcpy(&eight[s], &acc[s], sizeof eight[s]);
    }
  }
  for (int i = 0; i < 4; ++i)
    pairs[i] = __builtin_shufflevector(eight[2 * i], eight[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
               __builtin_shufflevector(eight[2 * i], eight[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  for (int j = 0; j < 2; ++j)
    quads[j] = __builtin_shufflevector(pairs[2 * j], pairs[2 * j + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(pairs[2 * j], pairs[2 * j + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(quads[0], quads[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(quads[0], quads[1], 4, 5, 6, 7, 12, 13, 14, 15);
#endif
}

// The first n (<= kBlock) steps' features from x (kF a step) as kF step vectors xs[f] (zeros
// past n); r_s = max(W x_s + b, 0) into block_r (kBlock x Dp); returns {v . r_s}.
template <int64_t kF>
inline Steps rectified_block(const float* __restrict__ x, int64_t n,
                           const float* __restrict__ weight_t, const float* __restrict__ bias,
                           const float* __restrict__ v, int64_t Dp, float* __restrict__ block_r,
                           Steps* xs) {
  float x_step[kBlock][kF] = {};
  if (n == kBlock) {
    std::memcpy(x_step, x, sizeof x_step);
  } else {
    for (int64_t s = 0; s < n; ++s)
      for (int64_t f = 0; f < kF; ++f) x_step[s][f] = x[s * kF + f];
  }
#if defined(ATTNLSTM_SHUFFLES)
  constexpr bool kTwoShuffles = kF == 2;
#else
  constexpr bool kTwoShuffles = false;
#endif
  if constexpr (kTwoShuffles) {  // the long-memory tasks: de-interleave in two shuffles
#if defined(ATTNLSTM_SHUFFLES)
    Steps first, second;
    std::memcpy(&first, &x_step[0][0], sizeof first);
    std::memcpy(&second, &x_step[kBlock / 2][0], sizeof second);
    xs[0] = __builtin_shufflevector(first, second, 0, 2, 4, 6, 8, 10, 12, 14);
    xs[1] = __builtin_shufflevector(first, second, 1, 3, 5, 7, 9, 11, 13, 15);
#endif
  } else {
    for (int64_t f = 0; f < kF; ++f)
      for (int64_t s = 0; s < kBlock; ++s) xs[f][s] = x_step[s][f];
  }
  Vec dots[kBlock] = {};
  for (int64_t b = 0; b < Dp; b += kLanes) {
    Vec wf[kF];
    for (int64_t f = 0; f < kF; ++f) wf[f] = load(weight_t + f * Dp + b);
    const Vec bv = load(bias + b), vv = load(v + b);
    for (int64_t s = 0; s < kBlock; ++s) {
      // x first: its broadcast register is free to overwrite, where b's would need a copy
      Vec p = broadcast(x_step[s][0]) * wf[0] + bv;
      for (int64_t f = 1; f < kF; ++f) p += wf[f] * x_step[s][f];
      const Vec r = relu(p);
      store(block_r + s * Dp + b, r);
      dots[s] += vv * r;
    }
  }
  return lane_sums(dots);
}

inline float dot(const float* a, const float* b, int64_t n) {
  float total = 0.f;
  for (int64_t i = 0; i < n; ++i) total += a[i] * b[i];
  return total;
}

// Runs rows(features, begin, end) over the B sequences on torch's threads, with features an
// std::integral_constant: the number of input features where it is 1-4, else 0 (read at
// run time).
template <typename Rows>
void split_rows(int64_t F, int64_t B, const Rows& rows) {
  auto run = [&](auto features) {
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) { rows(features, begin, end); });
  };
  switch (F) {
    case 1: run(std::integral_constant<int64_t, 1>{}); break;
    case 2: run(std::integral_constant<int64_t, 2>{}); break;
    case 3: run(std::integral_constant<int64_t, 3>{}); break;
    case 4: run(std::integral_constant<int64_t, 4>{}); break;
    default: run(std::integral_constant<int64_t, 0>{});
  }
}

}  // namespace

// lengths as int64, each checked to lie in [0, T] (the loops read and write up to it)
static torch::Tensor checked_lengths(const torch::Tensor& lengths, int64_t B, int64_t T) {
  auto out = lengths.to(torch::kInt64).contiguous();
  TORCH_CHECK(out.numel() == B, "fused pooling: ", out.numel(), " lengths for ", B, " rows");
  const int64_t* values = out.data_ptr<int64_t>();
  for (int64_t row = 0; row < B; ++row)
    TORCH_CHECK(0 <= values[row] && values[row] <= T, "fused pooling: row ", row, " has length ",
                values[row], ", outside [0, ", T, "]");
  return out;
}

// x: B x T x F; lengths: B (int64, real steps of each row); weight: D x F; bias: D;
// score_weight: D; score_bias: 1 (ignored when attend is false).
// Returns context (B x D), scores e (B x T, 0 on padding), weights alpha (B x T, 0 on padding).
std::vector<torch::Tensor> fused_pool_forward(torch::Tensor x, torch::Tensor lengths,
                                              torch::Tensor weight, torch::Tensor bias,
                                              torch::Tensor score_weight,
                                              torch::Tensor score_bias, bool attend) {
  x = x.contiguous();
  const int64_t B = x.size(0), T = x.size(1), F = x.size(2), D = weight.size(0);
  const PaddedParameters params = pad_parameters(weight, bias, score_weight);
  const int64_t Dp = params.Dp;
  const std::vector<float>& wt = params.weight_t;
  const std::vector<float>& bp = params.bias;
  const std::vector<float>& wp = params.score;
  const float c = attend ? score_bias.item<float>() : 0.f;
  // w . p_t = (W^T w) . x_t + w . b, for the blocks' scores (F <= 4)
  float w_times_W[4] = {};
  if (F <= 4) {
    for (int64_t f = 0; f < F; ++f) w_times_W[f] = dot(wt.data() + f * Dp, wp.data(), Dp);
  }
  const float w_dot_b = dot(wp.data(), bp.data(), Dp);
  auto lengths_c = checked_lengths(lengths, B, T);
  auto context = torch::zeros({B, D}, x.options());
  // written by the threads, padding (0) included: zeroing B x T floats twice up front would
  // be a pass through memory of its own
  auto scores = torch::empty({B, T}, x.options());
  auto weights = torch::empty({B, T}, x.options());

  const float* xp = x.data_ptr<float>();
  const int64_t* lp = lengths_c.data_ptr<int64_t>();
  float* cp = context.data_ptr<float>();
  float* sp = scores.data_ptr<float>();
  float* ap = weights.data_ptr<float>();

  auto rows = [&](auto features, int64_t begin, int64_t end) {
    constexpr int64_t kF = decltype(features)::value;
    // kF > 0: two blocks' r_t (one being weighed while the other is added to the context)
    std::vector<float> pre(Dp), hidden(Dp), acc(Dp), block_rectified(2 * kBlock * Dp);
    float* __restrict__ h = hidden.data();
    float* __restrict__ a = acc.data();
    float* __restrict__ block_r = block_rectified.data();
    const float* __restrict__ w = wp.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t L = lp[row];
      {
        const int64_t real = std::clamp<int64_t>(L, 0, T);
        std::fill(sp + row * T + real, sp + (row + 1) * T, 0.f);
        std::fill(ap + row * T + real, ap + (row + 1) * T, 0.f);
        if (!attend) std::fill(sp + row * T, sp + row * T + real, 0.f);
      }
      if (L <= 0) continue;
      std::fill(acc.begin(), acc.end(), 0.f);
      float* e_row = sp + row * T;
      float* a_row = ap + row * T;
      double total = 0.0;
      // exp(e_t) of a step's score c + w . h_t (1 for the mean), its e_t and exp(e_t) stored
      auto weigh = [&](float w_dot_h, int64_t t) {
        if (!attend) return 1.f;
        const float s = c + w_dot_h;
        // tanh through one exp: glibc's tanhf costs several expf
        const float e = 1.f - 2.f / (std::exp(2.f * s) + 1.f);
        e_row[t] = e;
        const float unnormalised = std::exp(e);  // e in [-1, 1]: no running maximum needed
        a_row[t] = unnormalised;
        return unnormalised;
      };
      if constexpr (kF > 0) {
        // a gathers sum_t u_t r_t, and xu_f = sum_t u_t x_tf; then a = sum_t u_t h_t (above)
        DoubleSteps u_total = {}, xu_total[kF] = {};
        const Steps step_index = {0, 1, 2, 3, 4, 5, 6, 7};
        // a += sum_s u_s r_s for one block (u from memory: broadcasts are then loads)
        auto add_to_context = [&](const float* __restrict__ r, Steps u_vector) {
          float u[kBlock];
          std::memcpy(u, &u_vector, sizeof u);
          for (int64_t b = 0; b < Dp; b += kLanes) {
            Vec even = load(a + b), odd = {};  // two chains of additions, not one of eight
            for (int64_t s = 0; s < kBlock; s += 2) {
              even += u[s] * load(r + s * Dp + b);
              odd += u[s + 1] * load(r + (s + 1) * Dp + b);
            }
            store(a + b, even + odd);
          }
        };
        // A block whose dense layer is done and whose weights are not yet taken.
        struct Block {
          const float* r;
          Steps score, xs[kF];
          int64_t t, n;
        };
        // u_t = exp(tanh(score_t)) of a block's steps (1 for the mean, 0 past its n steps)
        auto weigh_block = [&](const Block& block) {
          Steps u = steps_of(1.f);
          if (attend) {
            // tanh through one exp; e in [-1, 1], so exp(e) needs no running maximum
            const Steps e = 1.f - 2.f / (vector_exp(2.f * block.score) + 1.f);
            u = vector_exp(e);
            store_steps(e_row + block.t, e, block.n);
            store_steps(a_row + block.t, u, block.n);
          }
          u = step_index < steps_of(static_cast<float>(block.n)) ? u : Steps{};
          u_total += widen(u);
          for (int64_t f = 0; f < kF; ++f) xu_total[f] += widen(u * block.xs[f]);
          return u;
        };
        // The weights are a long chain of dependent operations (two vector exps). Each
        // block's chain is issued before the next block's dense layer, hundreds of independent
        // operations that the core runs while the chain waits; its context sum comes after.
        Block pending{};
        for (int64_t t = 0; t < L; t += kBlock) {
          Steps u_pending = {};
          if (t > 0) u_pending = weigh_block(pending);
          Block block{block_r + (t / kBlock % 2) * kBlock * Dp, {}, {}, t, std::min(kBlock, L - t)};
          const Steps w_dot_r = rectified_block<kF>(xp + (row * T + t) * kF, block.n,
                                                    wt.data(), bp.data(), w, Dp,
                                                    const_cast<float*>(block.r), block.xs);
          if (attend) {
            Steps w_dot_p = steps_of(w_dot_b);
            for (int64_t f = 0; f < kF; ++f) w_dot_p += w_times_W[f] * block.xs[f];
            block.score = c + kSlope * w_dot_p + (1.f - kSlope) * w_dot_r;
          }
          if (t > 0) add_to_context(pending.r, u_pending);
          pending = block;
        }
        add_to_context(pending.r, weigh_block(pending));  // L > 0: there was a block
        total = lane_total(u_total);
        double xu[kF];
        for (int64_t f = 0; f < kF; ++f) xu[f] = lane_total(xu_total[f]);
        for (int64_t d = 0; d < D; ++d) {
          double u_dot_p = bp[d] * total;
          for (int64_t f = 0; f < kF; ++f) u_dot_p += wt[f * Dp + d] * xu[f];
          a[d] = static_cast<float>(kSlope * u_dot_p + (1.f - kSlope) * a[d]);
        }
      } else {
        for (int64_t t = 0; t < L; ++t) {
          const float w_dot_h = dense_dot(xp + (row * T + t) * F, wt.data(), bp.data(), w, F, Dp,
                                              pre.data(), h);
          const float unnormalised = weigh(w_dot_h, t);
          total += unnormalised;
          for (int64_t b = 0; b < Dp; b += kLanes)
            for (int64_t k = 0; k < kLanes; ++k) a[b + k] += unnormalised * h[b + k];
        }
      }
      const float inv = static_cast<float>(1.0 / total);
      for (int64_t d = 0; d < D; ++d) cp[row * D + d] = a[d] * inv;
      if (attend) {
        for (int64_t t = 0; t < L; ++t) a_row[t] *= inv;
      } else {
        for (int64_t t = 0; t < L; ++t) a_row[t] = inv;
      }
    }
  };
  split_rows(F, B, rows);
  return {context, scores, weights};
}

// The gradients of fused_pool_forward's context: {dx (or an empty tensor), dW, db, dw, dc}.
std::vector<torch::Tensor> fused_pool_backward(torch::Tensor grad_context, torch::Tensor x,
                                               torch::Tensor lengths, torch::Tensor weight,
                                               torch::Tensor bias, torch::Tensor score_weight,
                                               torch::Tensor scores, torch::Tensor weights,
                                               torch::Tensor context, bool attend,
                                               bool need_grad_x) {
  x = x.contiguous();
  const int64_t B = x.size(0), T = x.size(1), F = x.size(2), D = weight.size(0);
  const PaddedParameters params = pad_parameters(weight, bias, score_weight);
  const int64_t Dp = params.Dp;
  const std::vector<float>& wt = params.weight_t;
  const std::vector<float>& bp = params.bias;
  const std::vector<float>& wp = params.score;
  const std::vector<float> gp = pad_columns(grad_context, B, D);  // B x Dp
  const std::vector<float> cp = pad_columns(context, B, D);        // B x Dp
  auto lengths_c = checked_lengths(lengths, B, T);
  auto scores_c = scores.contiguous();
  auto weights_c = weights.contiguous();
  auto grad_x = need_grad_x ? torch::zeros_like(x) : torch::Tensor();

  const int threads = at::get_num_threads();
  // per thread: dW^T (F x Dp), db (Dp), dw (Dp), dc (1), summed after the parallel region
  const int64_t per_thread = F * Dp + 2 * Dp + 1;
  std::vector<double> partial(static_cast<size_t>(threads) * per_thread, 0.0);

  const float* xp = x.data_ptr<float>();
  const int64_t* lp = lengths_c.data_ptr<int64_t>();
  const float* sp = scores_c.data_ptr<float>();
  const float* ap = weights_c.data_ptr<float>();
  float* gxp = need_grad_x ? grad_x.data_ptr<float>() : nullptr;

  auto rows = [&](auto features, int64_t begin, int64_t end) {
    constexpr int64_t kF = decltype(features)::value;
    const int thread = at::get_thread_num();
    double* sums = partial.data() + static_cast<size_t>(thread) * per_thread;
    // float sums over one row's steps, added into the double sums once per row
    std::vector<float> pre(Dp), hidden(Dp), grad_pre(Dp), gw_t(F * Dp), gb(Dp), gw(Dp);
    // kF > 0: the block's r_t, and the masked sums (kF + 2 rows of Dp)
    std::vector<float> block_rectified(kBlock * Dp), masked((kF + 2) * Dp);
    float* __restrict__ block_r = block_rectified.data();
    float* __restrict__ masked_p = masked.data();
    float* __restrict__ h = hidden.data();
    float* __restrict__ p = pre.data();
    float* __restrict__ dp = grad_pre.data();
    float* __restrict__ sum_b = gb.data();
    float* __restrict__ sum_w = gw.data();
    float* __restrict__ sum_W = gw_t.data();  // dW^T, F x Dp
    const float* __restrict__ w = wp.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t L = lp[row];
      if (L <= 0) continue;
      const float* __restrict__ g = gp.data() + row * Dp;
      float g_dot_c = 0.f;
      for (int64_t d = 0; d < Dp; ++d) g_dot_c += g[d] * cp[row * Dp + d];
      std::fill(gw_t.begin(), gw_t.end(), 0.f);
      std::fill(gb.begin(), gb.end(), 0.f);
      std::fill(gw.begin(), gw.end(), 0.f);
      float gc = 0.f;
      if constexpr (kF > 0) {
        // With q_t = alpha_t g + dL/da_t w (so that dL/dp_t = s_t q_t): masked rows 0, 1 + f
        // and 1 + kF gather sum_t [r_t > 0] q_t, the same times x_tf, and sum_t dL/da_t r_t;
        // the scalar totals sum_t alpha_t (1, x_t) and sum_t dL/da_t (1, x_t) give the rest.
        std::fill(masked.begin(), masked.end(), 0.f);
        DoubleSteps alpha_sums[kF + 1] = {}, act_sums[kF + 1] = {};
        float g_times_W[kF];
        for (int64_t f = 0; f < kF; ++f) g_times_W[f] = dot(wt.data() + f * Dp, g, Dp);
        const float g_dot_b = dot(g, bp.data(), Dp);
        for (int64_t t = 0; t < L; t += kBlock) {
          const int64_t n = std::min(kBlock, L - t);
          Steps xs[kF];
          const Steps g_dot_r = rectified_block<kF>(xp + (row * T + t) * kF, n, wt.data(),
                                                  bp.data(), g, Dp, block_r, xs);
          const Steps alpha = load_steps(ap + row * T + t, n);
          Steps grad_act = {};
          if (attend) {
            Steps g_dot_p = steps_of(g_dot_b);
            for (int64_t f = 0; f < kF; ++f) g_dot_p += g_times_W[f] * xs[f];
            const Steps e = load_steps(sp + row * T + t, n);
            const Steps g_dot_h = kSlope * g_dot_p + (1.f - kSlope) * g_dot_r;
            grad_act = alpha * (g_dot_h - g_dot_c) * (1.f - e * e);  // 0 past n, as alpha
          }
          alpha_sums[0] += widen(alpha);
          act_sums[0] += widen(grad_act);
          for (int64_t f = 0; f < kF; ++f) {
            alpha_sums[1 + f] += widen(alpha * xs[f]);
            act_sums[1 + f] += widen(grad_act * xs[f]);
          }
          // the per-step scalars in memory, so that broadcasting them is a load, not a
          // shuffle competing with the arithmetic for the vector ports
          float alpha_s[kBlock], act_s[kBlock], x_s[kF][kBlock];
          std::memcpy(alpha_s, &alpha, sizeof alpha_s);
          std::memcpy(act_s, &grad_act, sizeof act_s);
          for (int64_t f = 0; f < kF; ++f) std::memcpy(x_s[f], &xs[f], sizeof x_s[f]);
          // the sweep with and without dL/dx, compiled apart so that the common case (x is
          // data, no dL/dx) has no test in its inner loop
          auto sweep = [&](auto with_grad_x) {
            constexpr bool kGradX = decltype(with_grad_x)::value;
            Vec grad_x[kGradX ? kBlock : 1][kF] = {};
            for (int64_t b = 0; b < Dp; b += kLanes) {
              const Vec gv = load(g + b), wv = load(w + b);
              Vec sum_q = load(masked_p + b), sum_act_r = load(masked_p + (1 + kF) * Dp + b);
              Vec sum_qx[kF], wf[kF];
              for (int64_t f = 0; f < kF; ++f) {
                sum_qx[f] = load(masked_p + (1 + f) * Dp + b);
                wf[f] = load(wt.data() + f * Dp + b);
              }
              for (int64_t s = 0; s < kBlock; ++s) {
                const Vec r = load(block_r + s * Dp + b);
                const Vec q = alpha_s[s] * gv + act_s[s] * wv;
                const Mask r_positive = positive(r);
                sum_q = add_where(r_positive, sum_q, q);
                for (int64_t f = 0; f < kF; ++f)
                  sum_qx[f] = fma_where(r_positive, sum_qx[f], q, x_s[f][s]);
                sum_act_r += act_s[s] * r;
                if constexpr (kGradX) {  // dL/dx_t = W^T dL/dp_t = W^T (kSlope q + 0.99 q+)
                  const Vec grad_p = kSlope * q + (1.f - kSlope) * where(r_positive, q);
                  for (int64_t f = 0; f < kF; ++f) grad_x[s][f] += grad_p * wf[f];
                }
              }
              store(masked_p + b, sum_q);
              for (int64_t f = 0; f < kF; ++f) store(masked_p + (1 + f) * Dp + b, sum_qx[f]);
              store(masked_p + (1 + kF) * Dp + b, sum_act_r);
            }
            if constexpr (kGradX)
              for (int64_t s = 0; s < n; ++s)
                for (int64_t f = 0; f < kF; ++f)
                  gxp[(row * T + t + s) * kF + f] = lane_sum(grad_x[s][f]);
          };
          if (gxp != nullptr) {
            sweep(std::true_type{});
          } else {
            sweep(std::false_type{});
          }
        }
        // the row's gradients: sum_t s_t q_t (1, x_tf), sum_t dL/da_t h_t and sum_t dL/da_t
        double alpha_totals[kF + 1], act_totals[kF + 1];
        for (int64_t k = 0; k <= kF; ++k) {
          alpha_totals[k] = lane_total(alpha_sums[k]);
          act_totals[k] = lane_total(act_sums[k]);
        }
        for (int64_t d = 0; d < Dp; ++d) {
          const double gd = g[d], wd = w[d];
          sum_b[d] = static_cast<float>(kSlope * (gd * alpha_totals[0] + wd * act_totals[0]) +
                                        (1.0 - kSlope) * masked_p[d]);
          double act_p = bp[d] * act_totals[0];
          for (int64_t f = 0; f < kF; ++f) {
            sum_W[f * Dp + d] = static_cast<float>(
                kSlope * (gd * alpha_totals[1 + f] + wd * act_totals[1 + f]) +
                (1.0 - kSlope) * masked_p[(1 + f) * Dp + d]);
            act_p += wt[f * Dp + d] * act_totals[1 + f];
          }
          sum_w[d] = static_cast<float>(kSlope * act_p +
                                        (1.0 - kSlope) * masked_p[(1 + kF) * Dp + d]);
        }
        gc = static_cast<float>(act_totals[0]);
      }
      for (int64_t t = 0; kF == 0 && t < L; ++t) {
        const float* x_t = xp + (row * T + t) * F;
        const float g_dot_h = dense_dot(x_t, wt.data(), bp.data(), g, F, Dp, p, h);
        const float alpha = ap[row * T + t];
        float grad_act = 0.f;
        if (attend) {
          const float e = sp[row * T + t];
          grad_act = alpha * (g_dot_h - g_dot_c) * (1.f - e * e);
          gc += grad_act;
        }
        backward_step(x_t, p, h, g, w, alpha, grad_act, F, Dp, dp, sum_b, sum_w, sum_W);
        if (gxp != nullptr) {
          float* gx_t = gxp + (row * T + t) * F;
          for (int64_t f = 0; f < F; ++f) {
            const float* __restrict__ row_f = wt.data() + f * Dp;
            float s = 0.f;
            for (int64_t b = 0; b < Dp; b += kLanes)
              for (int64_t k = 0; k < kLanes; ++k) s += dp[b + k] * row_f[b + k];
            gx_t[f] = s;
          }
        }
      }
      for (int64_t i = 0; i < F * Dp; ++i) sums[i] += gw_t[i];
      for (int64_t d = 0; d < Dp; ++d) {
        sums[F * Dp + d] += gb[d];
        sums[F * Dp + Dp + d] += gw[d];
      }
      sums[F * Dp + 2 * Dp] += gc;
    }
  };
  split_rows(F, B, rows);

  std::vector<double> total(per_thread, 0.0);
  for (int thread = 0; thread < threads; ++thread)
    for (int64_t i = 0; i < per_thread; ++i) total[i] += partial[thread * per_thread + i];
  auto options = x.options();
  auto grad_weight = torch::empty({D, F}, options);
  auto grad_bias = torch::empty({D}, options);
  auto grad_w = torch::empty({D}, options);
  auto grad_c = torch::empty({1}, options);
  float* gW = grad_weight.data_ptr<float>();
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t f = 0; f < F; ++f) gW[d * F + f] = static_cast<float>(total[f * Dp + d]);
    grad_bias.data_ptr<float>()[d] = static_cast<float>(total[F * Dp + d]);
    grad_w.data_ptr<float>()[d] = static_cast<float>(total[F * Dp + Dp + d]);
  }
  grad_c.data_ptr<float>()[0] = static_cast<float>(total[F * Dp + 2 * Dp]);
  return {grad_x, grad_weight, grad_bias, grad_w, grad_c};
}

// Both release the GIL while they run, as torch's own operators do, so that other Python
// threads (a data loader's, a progress bar's) keep going.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_pool_forward", &fused_pool_forward,
        "context, scores, weights of the fused dense layer and pooling",
        py::call_guard<py::gil_scoped_release>());
  m.def("fused_pool_backward", &fused_pool_backward,
        "dx, dW, db, dw, dc of the fused dense layer and pooling",
        py::call_guard<py::gil_scoped_release>());
}
