// Raffel & Ellis's dense layer and feed-forward attention pooling, fused into one sweep over
// each sequence's steps forward and one more backward, for long inputs on the CPU.
//
// For every real step t of a sequence (x_t has F features; D units):
//
//     p_t = W x_t + b,   h_t = LReLU(p_t),   e_t = tanh(w . h_t + c),
//     alpha_t = exp(e_t) / sum_u exp(e_u),   context = sum_t alpha_t h_t
//
// (``mean`` pooling: alpha_t = 1 / L and no scores). Since e_t lies in [-1, 1], exp(e_t) lies
// in [1/e, e] and the softmax needs no running maximum. The kernel takes the steps four at a
// time (kSteps, for 1-4 input features; one at a time otherwise) and keeps their p_t and h_t
// in a 4 x D-float buffer that stays in the L1 cache, so nothing of size T x D is ever
// written (the backward pass recomputes them). Sequences are split over torch's threads (at::parallel_for): one parallel region
// per call, not one per small kernel, which is what keeps it fast beside a busy process.
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

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr float kSlope = 0.01f;  // attnlstm.models.common.LEAKY_SLOPE
// Every loop over the D units runs over Dp = D rounded up to kLanes (one AVX2 register of
// floats), on copies of the parameters padded with zeros: a padded unit has p = h = 0 and adds
// nothing to any sum, and the loops need no scalar remainder at every step.
constexpr int64_t kLanes = 8;

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

// One pass over the units for one step: p = W x + b and h = LReLU(p) (both stored), and the
// dot product v . h. kF > 0 fixes the number of input features at compile time (the
// long-memory tasks have 2), which lets the loop over the units vectorise; kF = 0 reads F.
template <int64_t kF>
inline float dense_dot(const float* __restrict__ x, const float* __restrict__ weight_t,
                       const float* __restrict__ bias, const float* __restrict__ v, int64_t F,
                       int64_t Dp, float* __restrict__ pre, float* __restrict__ hidden) {
  const int64_t features = kF > 0 ? kF : F;
  float total = 0.f;
  for (int64_t d = 0; d < Dp; ++d) {
    float p = bias[d];
    for (int64_t f = 0; f < features; ++f) p += weight_t[f * Dp + d] * x[f];
    const float h = p > 0.f ? p : kSlope * p;
    pre[d] = p;
    hidden[d] = h;
    total += v[d] * h;
  }
  return total;
}


// The backward pass's second sweep over the units for one step, given dL/da_t (grad_act):
// dL/dp_t (into grad_pre) and its sums into the gradients of b, w and W^T (F x Dp).
template <int64_t kF>
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
  if constexpr (kF > 0) {
    float xs[kF];
    for (int64_t f = 0; f < kF; ++f) xs[f] = x[f];
    for (int64_t f = 0; f < kF; ++f)
      for (int64_t d = 0; d < Dp; ++d) sum_W[f * Dp + d] += grad_pre[d] * xs[f];
  } else {
    for (int64_t f = 0; f < F; ++f) {
      const float xf = x[f];
      for (int64_t d = 0; d < Dp; ++d) sum_W[f * Dp + d] += grad_pre[d] * xf;
    }
  }
}

// -- several steps at once (1-4 input features) ---------------------------------------------
//
// A step's chain is long: the dot product w . h_t, its reduction, the tanh, the exp, and only
// then the weighted sum into the context. One step at a time leaves the core waiting on that
// chain (about 100 cycles a step). kSteps steps at once load W, b and w once for all of them
// and run kSteps independent chains side by side; the context then takes kSteps steps in one
// pass. Units are kLanes-float vectors (GCC/Clang vector extensions: AVX2 or AVX-512 under
// -march=native, SSE pairs elsewhere).

constexpr int64_t kSteps = 4;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

inline float lane_sum(Vec v) {
  float total = 0.f;
  for (int64_t k = 0; k < kLanes; ++k) total += v[k];
  return total;
}

inline Vec broadcast(float value) { return Vec{} + value; }

// For the kS steps whose kF features start at x: p_s = W x_s + b (into pre, when not null)
// and h_s = LReLU(p_s) (into hidden), each Dp floats at s * Dp, and dots[s] = v . h_s.
template <int64_t kF, int64_t kS>
inline void dense_dot_steps(const float* __restrict__ x, const float* __restrict__ weight_t,
                            const float* __restrict__ bias, const float* __restrict__ v,
                            int64_t Dp, float* __restrict__ pre, float* __restrict__ hidden,
                            float* __restrict__ dots) {
  float xs[kS][kF];
  for (int64_t s = 0; s < kS; ++s)
    for (int64_t f = 0; f < kF; ++f) xs[s][f] = x[s * kF + f];
  Vec acc[kS] = {};
  const Vec zero = {}, slope = broadcast(kSlope);
  for (int64_t b = 0; b < Dp; b += kLanes) {
    Vec wf[kF];
    for (int64_t f = 0; f < kF; ++f) wf[f] = load(weight_t + f * Dp + b);
    const Vec bv = load(bias + b), vv = load(v + b);
    for (int64_t s = 0; s < kS; ++s) {
      Vec p = bv;
      for (int64_t f = 0; f < kF; ++f) p += wf[f] * xs[s][f];
      const Vec h = p > zero ? p : p * slope;
      if (pre != nullptr) store(pre + s * Dp + b, p);
      store(hidden + s * Dp + b, h);
      acc[s] += vv * h;
    }
  }
  for (int64_t s = 0; s < kS; ++s) dots[s] = lane_sum(acc[s]);
}

// The backward pass's sweep over the units for kS steps (pre, hidden as dense_dot_steps left
// them), given alpha_s and dL/da_s (grad_act): dL/dp_s summed into the gradients of b, w and
// W^T (F x Dp), and, when grad_x is not null, dL/dx_s = W^T dL/dp_s into grad_x[s * kF + f].
template <int64_t kF, int64_t kS>
inline void backward_steps(const float* __restrict__ x, const float* __restrict__ pre,
                           const float* __restrict__ hidden, const float* __restrict__ g,
                           const float* __restrict__ w, const float* __restrict__ weight_t,
                           const float* alpha, const float* grad_act, int64_t Dp,
                           float* __restrict__ sum_b, float* __restrict__ sum_w,
                           float* __restrict__ sum_W, float* __restrict__ grad_x) {
  float xs[kS][kF];
  for (int64_t s = 0; s < kS; ++s)
    for (int64_t f = 0; f < kF; ++f) xs[s][f] = x[s * kF + f];
  Vec gx[kS][kF] = {};
  const Vec zero = {}, one = broadcast(1.f), slope_neg = broadcast(kSlope);
  for (int64_t b = 0; b < Dp; b += kLanes) {
    const Vec gv = load(g + b), wv = load(w + b);
    Vec sb = load(sum_b + b), sw = load(sum_w + b);
    Vec sW[kF], wf[kF];
    for (int64_t f = 0; f < kF; ++f) {
      sW[f] = load(sum_W + f * Dp + b);
      wf[f] = load(weight_t + f * Dp + b);
    }
    for (int64_t s = 0; s < kS; ++s) {
      const Vec p = load(pre + s * Dp + b), h = load(hidden + s * Dp + b);
      const Vec slope = p > zero ? one : slope_neg;
      const Vec grad = slope * (alpha[s] * gv + grad_act[s] * wv);
      sb += grad;
      sw += grad_act[s] * h;
      for (int64_t f = 0; f < kF; ++f) sW[f] += grad * xs[s][f];
      if (grad_x != nullptr)
        for (int64_t f = 0; f < kF; ++f) gx[s][f] += grad * wf[f];
    }
    store(sum_b + b, sb);
    store(sum_w + b, sw);
    for (int64_t f = 0; f < kF; ++f) store(sum_W + f * Dp + b, sW[f]);
  }
  if (grad_x != nullptr)
    for (int64_t s = 0; s < kS; ++s)
      for (int64_t f = 0; f < kF; ++f) grad_x[s * kF + f] = lane_sum(gx[s][f]);
}

// Calls step(std::integral_constant<int64_t, n>{}, t) for t = 0, n, 2n, ... over L steps:
// blocks of kSteps, then single steps for the rest.
template <typename Step>
inline void in_blocks(int64_t L, const Step& step) {
  int64_t t = 0;
  for (; t + kSteps <= L; t += kSteps) step(std::integral_constant<int64_t, kSteps>{}, t);
  for (; t < L; ++t) step(std::integral_constant<int64_t, 1>{}, t);
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
  auto lengths_c = lengths.to(torch::kInt64).contiguous();
  auto context = torch::zeros({B, D}, x.options());
  auto scores = torch::zeros({B, T}, x.options());
  auto weights = torch::zeros({B, T}, x.options());

  const float* xp = x.data_ptr<float>();
  const int64_t* lp = lengths_c.data_ptr<int64_t>();
  float* cp = context.data_ptr<float>();
  float* sp = scores.data_ptr<float>();
  float* ap = weights.data_ptr<float>();

  auto rows = [&](auto features, int64_t begin, int64_t end) {
    constexpr int64_t kF = decltype(features)::value;
    std::vector<float> pre(Dp), hidden(Dp), acc(Dp), block_hidden(kSteps * Dp);
    float* __restrict__ h = hidden.data();
    float* __restrict__ a = acc.data();
    float* __restrict__ block_h = block_hidden.data();
    const float* __restrict__ w = wp.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t L = lp[row];
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
        in_blocks(L, [&](auto steps, int64_t t) {
          constexpr int64_t kS = decltype(steps)::value;
          float dots[kS], u[kS];
          dense_dot_steps<kF, kS>(xp + (row * T + t) * kF, wt.data(), bp.data(), w, Dp,
                                  nullptr, block_h, dots);
          for (int64_t s = 0; s < kS; ++s) {
            u[s] = weigh(dots[s], t + s);
            total += u[s];
          }
          for (int64_t b = 0; b < Dp; b += kLanes) {
            Vec sum = load(a + b);
            for (int64_t s = 0; s < kS; ++s) sum += u[s] * load(block_h + s * Dp + b);
            store(a + b, sum);
          }
        });
      } else {
        for (int64_t t = 0; t < L; ++t) {
          const float w_dot_h = dense_dot<kF>(xp + (row * T + t) * F, wt.data(), bp.data(), w,
                                              F, Dp, pre.data(), h);
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
  auto lengths_c = lengths.to(torch::kInt64).contiguous();
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
    std::vector<float> block_pre(kSteps * Dp), block_hidden(kSteps * Dp);
    float* __restrict__ block_p = block_pre.data();
    float* __restrict__ block_h = block_hidden.data();
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
        in_blocks(L, [&](auto steps, int64_t t) {
          constexpr int64_t kS = decltype(steps)::value;
          const float* x_t = xp + (row * T + t) * kF;
          float dots[kS], alpha[kS], grad_act[kS];
          dense_dot_steps<kF, kS>(x_t, wt.data(), bp.data(), g, Dp, block_p, block_h, dots);
          for (int64_t s = 0; s < kS; ++s) {
            alpha[s] = ap[row * T + t + s];
            grad_act[s] = 0.f;
            if (attend) {
              const float e = sp[row * T + t + s];
              grad_act[s] = alpha[s] * (dots[s] - g_dot_c) * (1.f - e * e);
              gc += grad_act[s];
            }
          }
          backward_steps<kF, kS>(x_t, block_p, block_h, g, w, wt.data(), alpha, grad_act, Dp,
                                 sum_b, sum_w, sum_W,
                                 gxp != nullptr ? gxp + (row * T + t) * kF : nullptr);
        });
      }
      for (int64_t t = 0; kF == 0 && t < L; ++t) {
        const float* x_t = xp + (row * T + t) * F;
        const float g_dot_h = dense_dot<kF>(x_t, wt.data(), bp.data(), g, F, Dp, p, h);
        const float alpha = ap[row * T + t];
        float grad_act = 0.f;
        if (attend) {
          const float e = sp[row * T + t];
          grad_act = alpha * (g_dot_h - g_dot_c) * (1.f - e * e);
          gc += grad_act;
        }
        backward_step<kF>(x_t, p, h, g, w, alpha, grad_act, F, Dp, dp, sum_b, sum_w, sum_W);
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
