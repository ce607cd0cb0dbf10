/* Minimal Arm semihosting (host file I/O, console, exit status) for QEMU and debug probes. */
#ifndef MCUGEN_SEMIHOST_H
#define MCUGEN_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

#include "mcugen_board.h" /* mcugen_format_u32, mcugen_format_hex32 */

/* Open modes of SYS_OPEN (the index of the fopen() mode string). */
#define MCUGEN_SH_MODE_READ_BINARY 1  /* "rb" */
#define MCUGEN_SH_MODE_WRITE_BINARY 5 /* "wb" */

/* Every function below executes `bkpt 0xab`: without a debugger or an emulator that
 * implements semihosting, that instruction faults. Only call them in semihosting builds. */
int mcugen_sh_open(const char *path, int mode);             /* handle, or -1 */
int mcugen_sh_close(int handle);                            /* 0 on success */
long mcugen_sh_file_length(int handle);                     /* bytes, or -1 */
int mcugen_sh_read(int handle, void *buffer, size_t bytes); /* 0 if all bytes were read */
int mcugen_sh_write(int handle, const void *buffer, size_t bytes); /* 0 if all written */
void mcugen_sh_print(const char *text);                     /* to the host's stdout */
void mcugen_sh_print_error(const char *text);               /* to the host's stderr */
void mcugen_sh_exit(int status) __attribute__((noreturn));  /* ends the session with status */

#endif /* MCUGEN_SEMIHOST_H */
