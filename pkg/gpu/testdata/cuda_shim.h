// Declarations of the CUDA device intrinsics the kernels use, so that a
// host without the CUDA toolkit can syntax- and type-check kernels/*.cu
// with clang (see TestKernelsParseWithClang). Never compiled into code.
#include <__clang_cuda_builtin_vars.h>
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __inline__ __attribute__((always_inline))
typedef unsigned long size_t;
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
__device__ unsigned int __float_as_uint(float);
__device__ float __uint_as_float(unsigned int);
__device__ float __int_as_float(int);
__device__ float fmaf(float, float, float);
__device__ float fmaxf(float, float);
__device__ float sqrtf(float);
__device__ double sqrt(double);
__device__ double exp(double);
__device__ double log(double);
__device__ bool isnan(float);
__device__ int min(int, int);
__device__ int max(int, int);
__device__ unsigned int min(unsigned int, unsigned int);
__device__ unsigned int atomicAdd(unsigned int*, unsigned int);
__device__ float __fmul_rn(float, float);
__device__ float __fadd_rn(float, float);
__device__ float __fsub_rn(float, float);
__device__ float __fdiv_rn(float, float);
__device__ float __fsqrt_rn(float);
__device__ void __syncthreads();
