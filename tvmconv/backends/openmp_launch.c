
#include <pthread.h>
#include <stdint.h>
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
