// CUDA implementation of the Backend interface (see include/chorus/backends/cuda_backend.h):
// the backend's lifetime, device memory, copies, errors, scratch areas and graph capture. The
// other parts are listed in cuda_backend_internal.h.
#include "chorus/backends/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <memory>

#include "chorus/backends/device_plan.h"
#include "chorus/core/str_cat.h"
#include "cuda_backend_internal.h"
#include "kernels.h"

namespace chorus::cuda_internal {
namespace {

// Tensor-parallel ranks keep one graph per segment between all-reduces.
constexpr size_t kMaxGraphs = 512;

class DeviceBuffer : public BackendBuffer {
 public:
  DeviceBuffer(void* p, size_t n) : p_(p), n_(n) {}
  ~DeviceBuffer() override { cudaFree(p_); }
  void* data() override { return p_; }
  size_t size() const override { return n_; }

 private:
  void* p_;
  size_t n_;
};

}  // namespace

CudaBackend::CudaBackend(int device, cudaStream_t stream, cublasHandle_t blas, void* blas_workspace,
                         const CudaBackendOptions& options)
    : device_(device),
      stream_(stream),
      blas_(blas),
      blas_workspace_(blas_workspace),
      options_(options),
      tape_(this, options.graphs ? kMaxGraphs : 0) {}

CudaBackend::~CudaBackend() {
  Flush();
  cudaStreamSynchronize(stream_);
  tape_.Clear();
  for (void* p : weights_) cudaFree(p);
  for (auto& [w, p] : dequantized_) cudaFree(p);
  cublasDestroy(blas_);
  cudaFree(blas_workspace_);
  cudaStreamDestroy(stream_);
}

CudaGraphStats CudaBackend::graph_stats() const {
  const OpTape::Stats& s = tape_.stats();
  return {s.eager,
          s.captured,
          s.replayed,
          s.capture_failures,
          static_cast<int64_t>(tape_.graphs()),
          dequantized_bytes_};
}

absl::StatusOr<std::unique_ptr<BackendBuffer>> CudaBackend::Alloc(size_t bytes) {
  Flush();
  void* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        StrCat("cuda: out of device memory allocating ", bytes, " bytes"));
  }
  return std::unique_ptr<BackendBuffer>(new DeviceBuffer(p, bytes));
}

absl::StatusOr<WeightTensor> CudaBackend::LoadWeight(const GgufTensorInfo& t) {
  Flush();
  auto traits = GetTypeTraits(static_cast<uint32_t>(t.type));
  if (!traits || !traits->supported || t.n_dims > 2 ||
      k::BlockBytes(static_cast<int>(t.type)) == 0) {
    return absl::FailedPreconditionError(StrCat("tensor '", t.name, "' has type ", TypeName(t.type),
                                                " or shape the cuda backend does not support"));
  }
  void* p = nullptr;
  if (cudaMalloc(&p, static_cast<size_t>(t.num_bytes)) != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(StrCat("cuda: out of device memory loading tensor '",
                                               t.name, "' (", t.num_bytes, " bytes)"));
  }
  weights_.push_back(p);
  // On the compute stream (ordered with every op, which runs on a non-blocking stream that
  // the legacy default stream does not order), then waited for: the source may be pageable.
  WeightTensor w;
  w.type = t.type;
  w.cols = t.ne[0];
  w.rows = t.n_dims == 2 ? t.ne[1] : 1;
  w.row_bytes = w.cols / traits->block_size * traits->type_size;
  w.data = p;
  // Q8_0 / Q4_0 regrouped in place for the GEMV's 16-byte loads (same bytes per row).
  const int repacked = options_.repack ? k::RepackedType(static_cast<int>(t.type), w.cols) : -1;
  if (cudaMemcpyAsync(p, t.data, static_cast<size_t>(t.num_bytes), cudaMemcpyHostToDevice,
                      stream_) != cudaSuccess ||
      (repacked >= 0 && k::RepackForGemv(Dev(w), stream_) != cudaSuccess) ||
      cudaStreamSynchronize(stream_) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError(StrCat("cuda: copying tensor '", t.name, "' failed"));
  }
  if (repacked >= 0) w.type = static_cast<GgmlType>(repacked);
  return w;
}

void CudaBackend::CopyToBackend(const void* host, void* dst, size_t bytes) {
  Flush();
  Check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
  Check(cudaStreamSynchronize(stream_));  // the host buffer may go away after the call
}

void CudaBackend::CopyToHost(const void* src, void* host, size_t bytes) {
  Flush();
  Check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
  Check(cudaStreamSynchronize(stream_));
}

void CudaBackend::Copy(void* dst, const void* src, size_t bytes) {
  Flush();
  Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::Synchronize() {
  Flush();
  Check(cudaStreamSynchronize(stream_));
}

absl::Status CudaBackend::AllReduceSum(Communicator& comm, float* data, int64_t count) {
  if (!comm.EnqueuesOnStream()) return Backend::AllReduceSum(comm, data, count);
  if (comm.Aborted()) {
    // Graphs recorded with this group's collectives must never replay on its freed
    // communicators: drop them, and fail the forward here.
    Flush();
    tape_.Clear();
    return absl::AbortedError("tensor parallel: the group was aborted");
  }
  Communicator* c = &comm;
  PushOp({kOpAllReduce, W(c), W(data), W(count)}, [=, this] {
    absl::Status s = c->EnqueueAllReduceSum(data, count, stream_);
    if (!s.ok() && error_.ok()) error_ = std::move(s);
  });
  return absl::OkStatus();
}

absl::Status CudaBackend::TakeError() {
  Flush();
  absl::Status s = error_;
  error_ = absl::OkStatus();
  return s;
}

bool CudaBackend::Check(cudaError_t e) {
  if (e == cudaSuccess) return true;
  if (error_.ok()) error_ = absl::InternalError(StrCat("cuda: ", cudaGetErrorString(e)));
  return false;
}

bool CudaBackend::Check(cublasStatus_t s) {
  if (s == CUBLAS_STATUS_SUCCESS) return true;
  if (error_.ok()) error_ = absl::InternalError(StrCat("cublas: status ", static_cast<int>(s)));
  return false;
}

bool CudaBackend::Grow(Scratch& s, size_t bytes) {
  if (bytes <= s.n) return true;
  Flush();  // also selects the device
  Check(cudaStreamSynchronize(stream_));
  tape_.Clear();
  return Check(s.Ensure(static_cast<size_t>(RoundUpPow2(static_cast<int64_t>(bytes)))));
}

bool CudaBackend::BeginCapture() {
  saved_error_ = error_;
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

void* CudaBackend::EndCapture() {
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
  const bool op_failed = !error_.ok() && saved_error_.ok();
  error_ = saved_error_;  // the ops run again eagerly if capture failed and report then
  if (e != cudaSuccess || graph == nullptr || op_failed) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (ie != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return exec;
}

bool CudaBackend::Launch(void* graph) {
  if (cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

void CudaBackend::Destroy(void* graph) {
  cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

}  // namespace chorus::cuda_internal
