
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
typedef struct { void* sync_handle; int32_t num_task; } Env;
typedef int (*Lambda)(int, Env*, void*);
static void (*gomp_parallel)(void (*)(void*), void*, unsigned, unsigned);
static int (*thread_num)(void);
static int (*team_size)(void);
static int (*max_threads)(void);
static int (*tvm_launch)(Lambda, void*, int);  /* TVM's own pool, where PyTorch's is not shared */
static int forked, most = 1;
struct job { Lambda f; void* cdata; Env env; int err; };

static void run(void* p) {
  struct job* j = p;
  for (int t = thread_num(); t < j->env.num_task; t += team_size()) {
    int r = j->f(t, &j->env, j->cdata);
    if (r) __atomic_store_n(&j->err, r, __ATOMIC_RELAXED);
  }
}

int tvmconv_parallel_launch(Lambda f, void* cdata, int num_task) {
  /* as many tasks as PyTorch's threads now (torch.set_num_threads sets OpenMP's count), at most
     TVMCONV_NUM_THREADS */
  if (!forked && !gomp_parallel) return tvm_launch(f, cdata, num_task);
  int threads = forked ? 1 : max_threads();
  if (threads > most) threads = most;
  struct job j = {f, cdata, {0, num_task > 0 ? num_task : (threads > 0 ? threads : 1)}, 0};
  if (j.env.num_task == 1 || threads <= 1) {
    for (int t = 0; t < j.env.num_task; ++t) {
      int r = f(t, &j.env, cdata);
      if (r) j.err = r;
    }
    return j.err;
  }
  gomp_parallel(run, &j, (unsigned)j.env.num_task, 0);
  return j.err;
}

void tvmconv_parallel_forked(void) { forked = 1; }

void tvmconv_parallel_bind(void* parallel, void* num, void* size, void* max, int cap, int in_child) {
  gomp_parallel = parallel; thread_num = num; team_size = size; max_threads = max; forked = in_child;
  most = cap > 0 ? cap : 1;
  pthread_atfork(0, 0, tvmconv_parallel_forked);
}

void tvmconv_parallel_bind_tvm(void* launch, int in_child) {
  tvm_launch = launch; forked = in_child;
  pthread_atfork(0, 0, tvmconv_parallel_forked);
}

/* Kernels' temporary buffers (TVM's __TVMBackendAllocWorkspace/FreeWorkspace: a row staging buffer, a
   register tile's write-back) from a per-thread arena, not TVM's workspace pool: the code TVM generates
   allocates and frees them in nested pairs, once per parallel task, and TVM's pool cost 30-60 ns a pair
   (a 14x14 depthwise layer of 576 channels makes 1152 pairs a call). A free pops the arena back to the
   buffer freed (so a pair skipped by a kernel's early error return is reclaimed by the next outer free);
   what does not fit, or is not for the CPU, goes to TVM's own functions. */
typedef void* (*AllocFn)(int, int, uint64_t, int, int);
typedef int (*FreeFn)(int, int, void*);
static AllocFn tvm_alloc;
static FreeFn tvm_free;
enum { ARENA_BYTES = 1 << 20, ARENA_ALIGN = 128 };  /* (TVM aligns its own to 64) */
static __thread char* arena;
static __thread size_t arena_top;
static __thread int arena_failed;
static pthread_key_t arena_key;  /* frees a thread's arena when the thread ends */
static pthread_once_t arena_key_once = PTHREAD_ONCE_INIT;
static int arena_key_ok;

static void make_arena_key(void) { arena_key_ok = pthread_key_create(&arena_key, free) == 0; }

static void make_arena(void) {  /* on the thread's first CPU buffer */
  pthread_once(&arena_key_once, make_arena_key);
  if (!arena_key_ok || posix_memalign((void**)&arena, ARENA_ALIGN, ARENA_BYTES)) {
    arena = 0;
    arena_failed = 1;
  } else if (pthread_setspecific(arena_key, arena)) {
    free(arena);
    arena = 0;
    arena_failed = 1;
  }
}

void* tvmconv_workspace_alloc(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  if (device_type == 1 && !arena && !arena_failed) make_arena();  /* (kDLCPU) */
  size_t at = (arena_top + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (device_type != 1 || !arena || nbytes > ARENA_BYTES - at) {
    return tvm_alloc(device_type, device_id, nbytes, code, bits);
  }
  arena_top = at + (size_t)nbytes;
  return arena + at;
}

int tvmconv_workspace_free(int device_type, int device_id, void* ptr) {
  if (arena && (char*)ptr >= arena && (char*)ptr < arena + ARENA_BYTES) {
    arena_top = (size_t)((char*)ptr - arena);
    return 0;
  }
  return tvm_free(device_type, device_id, ptr);
}

void tvmconv_workspace_bind(void* alloc, void* free_) { tvm_alloc = alloc; tvm_free = free_; }
