/* Minimal Arm semihosting (host file I/O, console, exit status) for QEMU and debug probes. */
#include "mcugen_semihost.h"

/* Operation numbers from Arm's "Semihosting for AArch32 and AArch64" specification. */
enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20
};

#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static int semihost_call(int operation, const void *argument)
{
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static size_t text_length(const char *text)
{
    size_t n = 0;
    while (text[n] != '\0') {
        ++n;
    }
    return n;
}

int mcugen_sh_open(const char *path, int mode)
{
    const uintptr_t block[3] = {(uintptr_t)path, (uintptr_t)mode, (uintptr_t)text_length(path)};
    return semihost_call(SYS_OPEN, block);
}

int mcugen_sh_close(int handle)
{
    const uintptr_t block[1] = {(uintptr_t)handle};
    return semihost_call(SYS_CLOSE, block);
}

long mcugen_sh_file_length(int handle)
{
    const uintptr_t block[1] = {(uintptr_t)handle};
    return (long)semihost_call(SYS_FLEN, block);
}

int mcugen_sh_read(int handle, void *buffer, size_t bytes)
{
    const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, (uintptr_t)bytes};
    return semihost_call(SYS_READ, block); /* number of bytes NOT read */
}

int mcugen_sh_write(int handle, const void *buffer, size_t bytes)
{
    const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, (uintptr_t)bytes};
    return semihost_call(SYS_WRITE, block); /* number of bytes NOT written */
}

/* ":tt" is the host console: opened for writing ("w", 4) it is stdout, for appending
 * ("a", 8) stderr. Handles are kept + 1 so that the zeroed .bss means "not open yet". */
static int console_handle(int *slot, int mode)
{
    if (*slot == 0) {
        *slot = mcugen_sh_open(":tt", mode) + 1;
    }
    return *slot - 1;
}

static int stdout_slot;
static int stderr_slot;

void mcugen_sh_print(const char *text)
{
    (void)mcugen_sh_write(console_handle(&stdout_slot, 4), text, text_length(text));
}

void mcugen_sh_print_error(const char *text)
{
    (void)mcugen_sh_write(console_handle(&stderr_slot, 8), text, text_length(text));
}

void mcugen_sh_exit(int status)
{
    const uintptr_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uintptr_t)status};
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    /* Hosts without the extended call: plain SYS_EXIT can only say "success" or not. */
    (void)semihost_call(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                                          : 0x20024u));
    for (;;) {
    }
}
