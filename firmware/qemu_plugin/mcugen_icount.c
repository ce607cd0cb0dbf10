/* mcugen_icount: QEMU TCG plugin (plugin API version 1, QEMU 7.2) that counts executed
 * guest instructions exactly and logs the count whenever execution reaches a marker.
 *
 * Arguments: out=<file> (the log), m<i>=<address> for up to 16 markers (i = 0..15).
 * Log lines: "<i> <n>" when marker i is reached after n executed instructions (not
 * counting the marker's own first instruction), and "total <n>" at exit.
 *
 * Counting: every translation block adds its instruction count to one counter when it
 * starts (an inline add, no callback). A marker instruction at index k of a block of
 * n instructions sees the counter already raised by n, so its count is counter - (n - k).
 * A block left early by an exception would be over-counted; mcugen's firmware only
 * leaves blocks early through faults, which end the run.
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below,
 * after QEMU's documented API (include/qemu/qemu-plugin.h, version 1). */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* never dereferenced here */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1;

#define MAX_MARKERS 16

static uint64_t executed;            /* instructions executed so far (one vCPU) */
static uint64_t marker_address[MAX_MARKERS];
static bool marker_set[MAX_MARKERS];
static int marker_count;
static FILE *log_file;

/* userdata packs the marker number (low 8 bits) and n - k (the rest). */
static void on_marker(unsigned int vcpu_index, void *userdata)
{
    const uintptr_t packed = (uintptr_t)userdata;
    (void)vcpu_index;
    fprintf(log_file, "%u %" PRIu64 "\n", (unsigned)(packed & 0xFFu), executed - (uint64_t)(packed >> 8));
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    const size_t n = qemu_plugin_tb_n_insns(tb);
    size_t k;
    int m;
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    for (k = 0; k < n; ++k) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        const uint64_t address = qemu_plugin_insn_vaddr(insn);
        for (m = 0; m < marker_count; ++m) {
            if (marker_set[m] && address == marker_address[m]) {
                const uintptr_t packed = ((uintptr_t)(n - k) << 8) | (uintptr_t)m;
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, (void *)packed);
            }
        }
    }
}

static void report_at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fprintf(log_file, "total %" PRIu64 "\n", executed);
    fclose(log_file);
    log_file = NULL;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *out = NULL;
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        const char *arg = argv[i];
        int index;
        char *end;
        if (strncmp(arg, "out=", 4) == 0) {
            out = arg + 4;
        } else if (arg[0] == 'm' && sscanf(arg, "m%d=", &index) == 1 && index >= 0 && index < MAX_MARKERS
                   && strchr(arg, '=') != NULL) {
            marker_address[index] = strtoull(strchr(arg, '=') + 1, &end, 0) & ~(uint64_t)1; /* Thumb bit */
            marker_set[index] = true;
            if (index >= marker_count) {
                marker_count = index + 1;
            }
        } else {
            qemu_plugin_outs("mcugen_icount: unknown argument\n");
            return -1;
        }
    }
    if (out == NULL || (log_file = fopen(out, "w")) == NULL) {
        qemu_plugin_outs("mcugen_icount: needs out=<writable file>\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, report_at_exit, NULL);
    return 0;
}
