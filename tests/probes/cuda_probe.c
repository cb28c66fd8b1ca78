/*
 * CUDA probe for scripts/gpu-proof.sh: what the Ollama sandbox needs from
 * the GPU through gVisor's nvproxy, with no CUDA toolkit at build time.
 *
 * It opens the driver's own libraries with dlopen, as Ollama's CUDA
 * backend does, and declares the few driver API entry points it calls:
 *   utility (NVML, libnvidia-ml.so.1): driver version and GPU count;
 *   compute (libcuda.so.1): cuInit, every device's name, compute capability
 *   and memory, a context, 64 MiB allocated, written and read back, and a
 *   kernel (PTX, JIT-compiled by the driver) run over it and checked.
 *
 * Output: one `key: value` line per fact, then `cuda-probe: ok`, exit 0.
 * Exit 2: libcuda.so.1 cannot be loaded (no driver mounted: what a machine
 * without a GPU sees); 3: NVML failed; 4: a CUDA call failed (the line says
 * which); 5: the data read back is wrong.
 *
 * Build: cc -std=gnu17 -O2 -o cuda_probe cuda_probe.c -ldl (the calls go
 * through unprototyped function pointers, which C23 no longer has)
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

#define ATTR_CC_MAJOR 75
#define ATTR_CC_MINOR 76

/* out[i] = in[i] * 2 + 1 over n 32-bit words, one thread per word. */
static const char PTX[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry twice_plus_one(.param .u64 data, .param .u32 n)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .b32 %r<8>;\n"
    "  .reg .b64 %rd<5>;\n"
    "  ld.param.u64 %rd1, [data];\n"
    "  ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x;\n"
    "  mov.u32 %r3, %ntid.x;\n"
    "  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p1, %r5, %r1;\n"
    "  @%p1 bra DONE;\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mul.wide.u32 %rd3, %r5, 4;\n"
    "  add.s64 %rd4, %rd2, %rd3;\n"
    "  ld.global.u32 %r6, [%rd4];\n"
    "  shl.b32 %r7, %r6, 1;\n"
    "  add.s32 %r7, %r7, 1;\n"
    "  st.global.u32 [%rd4], %r7;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n";

static void *cuda;
static CUresult (*getErrorName)(CUresult, const char **);

static void *sym(void *lib, const char *name) {
  void *f = dlsym(lib, name);
  if (!f) {
    printf("error: %s not found: %s\n", name, dlerror());
    exit(4);
  }
  return f;
}

static void check(CUresult r, const char *call) {
  const char *name = "?";
  if (r == 0)
    return;
  if (getErrorName)
    getErrorName(r, &name);
  printf("error: %s failed: %d %s\n", call, r, name);
  exit(4);
}

#define CU(fn) ((CUresult(*)())sym(cuda, fn))

static int nvml(void) {
  void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
  if (!lib) {
    printf("error: cannot load libnvidia-ml.so.1 (utility): %s\n", dlerror());
    return 3;
  }
  int (*init)(void) = (int (*)(void))dlsym(lib, "nvmlInit_v2");
  int (*version)(char *, unsigned) =
      (int (*)(char *, unsigned))dlsym(lib, "nvmlSystemGetDriverVersion");
  int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(lib, "nvmlDeviceGetCount_v2");
  if (!init || !version || !count) {
    printf("error: libnvidia-ml.so.1 lacks nvmlInit_v2, nvmlSystemGetDriverVersion or nvmlDeviceGetCount_v2\n");
    return 3;
  }
  char text[96] = {0};
  unsigned n = 0;
  int r = init();
  if (r != 0) {
    printf("error: nvmlInit_v2 failed: %d\n", r);
    return 3;
  }
  if ((r = version(text, sizeof text)) != 0 || (r = count(&n)) != 0) {
    printf("error: NVML query failed: %d\n", r);
    return 3;
  }
  printf("nvml-driver-version: %s\n", text);
  printf("nvml-gpus: %u\n", n);
  return 0;
}

int main(void) {
  cuda = dlopen("libcuda.so.1", RTLD_NOW);
  if (!cuda) {
    printf("error: cannot load libcuda.so.1 (compute): %s\n", dlerror());
    return 2;
  }
  getErrorName = (CUresult(*)(CUresult, const char **))dlsym(cuda, "cuGetErrorName");
  check(CU("cuInit")(0), "cuInit");
  int driver = 0;
  check(CU("cuDriverGetVersion")(&driver), "cuDriverGetVersion");
  printf("cuda-driver-api: %d.%d\n", driver / 1000, driver % 1000 / 10);
  int count = 0;
  check(CU("cuDeviceGetCount")(&count), "cuDeviceGetCount");
  printf("cuda-devices: %d\n", count);
  if (count < 1) {
    printf("error: no CUDA device\n");
    return 4;
  }
  for (int i = 0; i < count; i++) {
    CUdevice dev;
    char name[128] = {0};
    int major = 0, minor = 0;
    size_t mem = 0;
    check(CU("cuDeviceGet")(&dev, i), "cuDeviceGet");
    check(CU("cuDeviceGetName")(name, (int)sizeof name, dev), "cuDeviceGetName");
    check(CU("cuDeviceGetAttribute")(&major, ATTR_CC_MAJOR, dev), "cuDeviceGetAttribute");
    check(CU("cuDeviceGetAttribute")(&minor, ATTR_CC_MINOR, dev), "cuDeviceGetAttribute");
    check(CU("cuDeviceTotalMem_v2")(&mem, dev), "cuDeviceTotalMem_v2");
    printf("cuda-device-%d: %s, compute capability %d.%d, %zu MiB\n", i, name, major, minor,
           mem >> 20);
  }

  CUdevice dev;
  CUcontext ctx;
  check(CU("cuDeviceGet")(&dev, 0), "cuDeviceGet");
  check(CU("cuDevicePrimaryCtxRetain")(&ctx, dev), "cuDevicePrimaryCtxRetain");
  check(CU("cuCtxSetCurrent")(ctx), "cuCtxSetCurrent");

  const unsigned n = 16u << 20; /* 16 Mi words: 64 MiB */
  const size_t bytes = (size_t)n * 4;
  unsigned *host = malloc(bytes);
  if (!host) {
    printf("error: out of host memory\n");
    return 4;
  }
  for (unsigned i = 0; i < n; i++)
    host[i] = i * 2654435761u;
  CUdeviceptr buffer;
  check(CU("cuMemAlloc_v2")(&buffer, bytes), "cuMemAlloc_v2");
  check(CU("cuMemcpyHtoD_v2")(buffer, host, bytes), "cuMemcpyHtoD_v2");
  memset(host, 0, bytes);
  check(CU("cuMemcpyDtoH_v2")(host, buffer, bytes), "cuMemcpyDtoH_v2");
  for (unsigned i = 0; i < n; i++) {
    if (host[i] != i * 2654435761u) {
      printf("error: copy round trip differs at word %u\n", i);
      return 5;
    }
  }
  printf("cuda-memcpy: 64 MiB to the GPU and back, identical\n");

  CUmodule module;
  CUfunction kernel;
  check(CU("cuModuleLoadData")(&module, PTX), "cuModuleLoadData (PTX JIT)");
  check(CU("cuModuleGetFunction")(&kernel, module, "twice_plus_one"), "cuModuleGetFunction");
  void *args[] = {&buffer, (void *)&n};
  unsigned threads = 256, blocks = (n + threads - 1) / threads;
  check(CU("cuLaunchKernel")(kernel, blocks, 1, 1, threads, 1, 1, 0, (CUstream)0, args, (void **)0),
        "cuLaunchKernel");
  check(CU("cuCtxSynchronize")(), "cuCtxSynchronize");
  check(CU("cuMemcpyDtoH_v2")(host, buffer, bytes), "cuMemcpyDtoH_v2");
  for (unsigned i = 0; i < n; i++) {
    if (host[i] != i * 2654435761u * 2 + 1) {
      printf("error: kernel result wrong at word %u\n", i);
      return 5;
    }
  }
  printf("cuda-kernel: %u threads computed 2x+1, all correct\n", n);
  check(CU("cuMemFree_v2")(buffer), "cuMemFree_v2");
  check(CU("cuModuleUnload")(module), "cuModuleUnload");

  int r = nvml();
  if (r != 0)
    return r;
  printf("cuda-probe: ok\n");
  return 0;
}
