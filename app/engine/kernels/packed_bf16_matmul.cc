// PackedBf16MatMul: float32 activations times bfloat16 weights, for decoding.
//
// Decoding a token multiplies a few rows by every weight of the model, so a
// step costs what reading the weights costs. TensorFlow's bfloat16 matmul does
// not read bfloat16 weights any faster than float32 ones; this kernel does:
// the weights are packed once into column panels of kPanel columns, each panel
// contiguous over the inner dimension, so a panel is one sequential read, and
// every row of the batch is multiplied while the panel is in cache.
//
// Each output element is summed over k in the same order with the same
// instructions whatever the number of rows or threads: a row's result does not
// depend on the batch it runs in.
//
//   a:       float32 [M, K]
//   packed:  bfloat16 [P, K, kPanel]: column n of the weight matrix is
//            packed[n / kPanel, :, n % kPanel]; columns past N are zero
//   n:       N, the weight matrix's real number of columns
//   product: float32 [M, N]
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::int64;

constexpr int kPanel = 32;  // columns per panel: two AVX-512 or four AVX2 registers
constexpr int kRows = 4;    // rows per register tile

REGISTER_OP("PackedBf16MatMul")
    .Input("a: float")
    .Input("packed: bfloat16")
    .Attr("n: int >= 1")
    .Output("product: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle a, packed;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &packed));
      int64_t n;
      TF_RETURN_IF_ERROR(c->GetAttr("n", &n));
      c->set_output(0, c->Matrix(c->Dim(a, 0), n));
      return absl::OkStatus();
    });

inline float Widen(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;  // bfloat16 is float32's top half
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// rows x kPanel outputs for one panel, accumulated in registers over all of K.
template <int rows>
inline void Tile(const float* a, int64 k_size, const uint16_t* panel, float* out) {
  float acc[rows][kPanel] = {};
  for (int64 k = 0; k < k_size; ++k) {
    float w[kPanel];
    for (int j = 0; j < kPanel; ++j) w[j] = Widen(panel[k * kPanel + j]);
    for (int r = 0; r < rows; ++r) {
      const float x = a[r * k_size + k];
      for (int j = 0; j < kPanel; ++j) acc[r][j] += x * w[j];
    }
  }
  for (int r = 0; r < rows; ++r) std::memcpy(out + r * kPanel, acc[r], sizeof acc[r]);
}

// Panels [first, last) for every row. One function per instruction set,
// chosen once at load time by the CPU it runs on.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void PanelRange(const float* a, int64 m_size, int64 k_size, const uint16_t* packed,
                int64 n_size, int64 first, int64 last, float* product) {
  float block[kRows * kPanel];
  for (int64 p = first; p < last; ++p) {
    const uint16_t* panel = packed + p * k_size * kPanel;
    const int64 n0 = p * kPanel;
    const int64 width = n_size - n0 < kPanel ? n_size - n0 : kPanel;
    for (int64 m = 0; m < m_size; m += kRows) {
      const int64 rows = m_size - m < kRows ? m_size - m : kRows;
      const float* a_rows = a + m * k_size;
      switch (rows) {
        case 4: Tile<4>(a_rows, k_size, panel, block); break;
        case 3: Tile<3>(a_rows, k_size, panel, block); break;
        case 2: Tile<2>(a_rows, k_size, panel, block); break;
        default: Tile<1>(a_rows, k_size, panel, block); break;
      }
      for (int64 r = 0; r < rows; ++r) {
        std::memcpy(product + (m + r) * n_size + n0, block + r * kPanel, width * sizeof(float));
      }
    }
  }
}

class PackedBf16MatMulOp : public tensorflow::OpKernel {
 public:
  explicit PackedBf16MatMulOp(tensorflow::OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("n", &n_));
  }

  void Compute(tensorflow::OpKernelContext* context) override {
    const tensorflow::Tensor& a = context->input(0);
    const tensorflow::Tensor& packed = context->input(1);
    OP_REQUIRES(context, a.dims() == 2 && packed.dims() == 3,
                absl::InvalidArgumentError(absl::StrCat("a must be [M, K] and packed [P, K, ", kPanel, "]")));
    const int64 m_size = a.dim_size(0), k_size = a.dim_size(1);
    const int64 panels = packed.dim_size(0);
    OP_REQUIRES(context, packed.dim_size(1) == k_size && packed.dim_size(2) == kPanel,
                absl::InvalidArgumentError(absl::StrCat(
                    "packed weights are [", panels, ", ", packed.dim_size(1), ", ", packed.dim_size(2),
                    "], expected [P, ", k_size, ", ", kPanel, "]")));
    OP_REQUIRES(context, panels * kPanel >= n_ && (panels - 1) * kPanel < n_,
                absl::InvalidArgumentError(absl::StrCat("n = ", n_, " does not fit ", panels, " panels")));
    tensorflow::Tensor* product = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, {m_size, n_}, &product));
    if (m_size == 0 || k_size == 0) {
      product->flat<float>().setZero();
      return;
    }
    const float* a_data = a.flat<float>().data();
    const uint16_t* packed_data = reinterpret_cast<const uint16_t*>(packed.flat<tensorflow::bfloat16>().data());
    float* out = product->flat<float>().data();
    const int64 n_size = n_;
    auto work = [&](int64 first, int64 last) {
      PanelRange(a_data, m_size, k_size, packed_data, n_size, first, last, out);
    };
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    // Cost of one panel: its bytes read plus two flops per row and weight.
    tensorflow::Shard(threads->num_threads, threads->workers, panels,
                      k_size * kPanel * (2 + 2 * m_size), work);
  }

 private:
  int64_t n_;
};

REGISTER_KERNEL_BUILDER(Name("PackedBf16MatMul").Device(tensorflow::DEVICE_CPU), PackedBf16MatMulOp);

}  // namespace
