#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
int open(const char* path, int flags, ...);
long read(int fd, void* buf, size_t n);
int close(int fd);
void* malloc(size_t n);
void* calloc(size_t n, size_t size);
void free(void* p);
int posix_memalign(void** p, size_t align, size_t n);
void* memcpy(void* dst, const void* src, size_t n);
void* memset(void* p, int c, size_t n);
char* getenv(const char* name);
long strtol(const char* s, char** end, int base);
int get_nprocs(void);
int snprintf(char* buf, size_t n, const char* fmt, ...);
long write(int fd, const void* buf, size_t n);
#ifdef __cplusplus
}
#endif
