/* A whole model compiled by `tvmconv export --model`: no TVM runtime needed.
 *   tvmconv_model* m = tvmconv_model_create();     // its working memory; NULL if out of memory
 *   tvmconv_model_run(m, inputs, outputs);        // arrays of TVMCONV_MODEL_NUM_INPUTS / _OUTPUTS
 *   tvmconv_model_free(m);                        // pointers to dense row-major tensors
 * One model object runs one call at a time; create one per thread to run several at once.
 * Kernels use tvmconv_set_num_threads(n) threads (default: TVMCONV_NUM_THREADS, else every CPU). */
#ifndef TVMCONV_MODEL_H_
#define TVMCONV_MODEL_H_
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
#define TVMCONV_MODEL_NUM_INPUTS ${n_in}
#define TVMCONV_MODEL_NUM_OUTPUTS ${n_out}
#define TVMCONV_MODEL_MAX_NDIM ${most}
static const int TVMCONV_MODEL_INPUT_NDIM[] = {${in_nd}};
static const int64_t TVMCONV_MODEL_INPUT_SHAPE[][TVMCONV_MODEL_MAX_NDIM] = {${in_shapes}};
static const int TVMCONV_MODEL_OUTPUT_NDIM[] = {${out_nd}};
static const int64_t TVMCONV_MODEL_OUTPUT_SHAPE[][TVMCONV_MODEL_MAX_NDIM] = {${out_shapes}};
static const int64_t TVMCONV_MODEL_INPUT_BYTES[] = {${in_bytes}};
static const int64_t TVMCONV_MODEL_OUTPUT_BYTES[] = {${out_bytes}};
typedef struct tvmconv_model tvmconv_model;
tvmconv_model* tvmconv_model_create(void);
/* 0: done; -1: m, inputs, outputs or any tensor pointer in them is NULL; else a kernel's error */
int tvmconv_model_run(tvmconv_model* m, const void* const* inputs, void* const* outputs);
void tvmconv_model_free(tvmconv_model* m);
int tvmconv_set_num_threads(int n);  /* threads the kernels may use from now on; n < 1: one */
int tvmconv_num_threads(void);
#ifdef __cplusplus
}  /* extern "C" */
#endif
#endif  /* TVMCONV_MODEL_H_ */
