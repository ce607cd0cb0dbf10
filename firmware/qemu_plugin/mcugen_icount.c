/* mcugen_icount: QEMU TCG plugin (plugin API version 1, QEMU 7.2) that counts executed
 * guest instructions exactly, estimates their cycles from a per-class timing table, and
 * logs both whenever execution reaches a marker.
 *
 * Arguments: out=<file> (the log), m<i>=<address> for up to 16 markers (i = 0..15), and
 * optionally timing=<v0>:<v1>:... (one cycle value per name of TIMING_FIELDS below, in
 * that order; mcugen/cycles.py holds the tables and passes them). Without timing= no
 * cycles are estimated (logged as 0).
 * Log lines: "<i> <n> <c>" when marker i is reached after n executed instructions and an
 * estimated c cycles (neither counting the marker's own first instruction), and at exit
 * "total <n> <c>" and "unclassified <n> <mnemonic> ..." (executed instructions the
 * classifier did not know, charged as TIMING_UNCLASSIFIED; up to 8 distinct mnemonics).
 *
 * Counting: every translation block adds its instruction count to one counter when it
 * starts (an inline add, no callback). A marker instruction at index k of a block of
 * n instructions sees the counter already raised by n, so its count is counter - (n - k).
 * A block left early by an exception would be over-counted; mcugen's firmware only
 * leaves blocks early through faults, which end the run.
 *
 * Cycles: at translation each instruction's disassembly is classified (mcugen_classify)
 * and costed (insn_cycles); a block's cycles are summed then, with a single load/store
 * that directly follows another one in the block charged load_store_pipelined. A
 * callback at the start of every executed block adds the block's cycles and settles
 * what only execution tells: whether the previous block's conditional branch was taken
 * (this block does not start at its fall-through address: + branch_refill, or the rest
 * of a conditional PC write's cost) and whether a load/store ending the previous block
 * is directly followed by one starting this block (pipelined). Marker cycles subtract
 * the cost of the block's instructions from the marker on, as for the counts.
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below,
 * after QEMU's documented API (include/qemu/qemu-plugin.h, version 1). They are weak so
 * that a test can also load this library with ctypes (outside QEMU) and call
 * mcugen_classify / mcugen_insn_cycles on disassembly strings. */
#include <ctype.h>
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

#define WEAK __attribute__((weak))
WEAK void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
WEAK void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                                   void *ptr, uint64_t imm);
WEAK void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                               enum qemu_plugin_cb_flags flags, void *userdata);
WEAK void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
WEAK void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
WEAK size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
WEAK uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
WEAK struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
WEAK uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
WEAK size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
WEAK char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
WEAK void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1;

/* --- the instruction classifier -------------------------------------------------------
 * Timing fields, in the order of mcugen/cycles.py's TIMING_FIELDS (checked by a test).
 * The first TIMING_CLASSES of them are instruction classes: an instruction of class c
 * costs timing[c], except `multiple` (timing[multiple] + ceil(words / regs_per_cycle),
 * a D register counting as two words). Writing PC adds branch_refill (taken). */
#define TIMING_FIELDS(X) \
    X(ALU, "alu") X(MUL, "mul") X(MLA, "mla") X(DIV, "div") X(LOAD_STORE, "load_store") \
    X(LOAD_STORE_PAIR, "load_store_pair") X(MULTIPLE, "multiple") X(BRANCH, "branch") \
    X(FP, "fp") X(FP_MAC, "fp_mac") X(FP_DIV, "fp_div") X(FP_LOAD_STORE, "fp_load_store") \
    X(FP_LOAD_STORE_PAIR, "fp_load_store_pair") X(SYSTEM, "system") X(IT, "it") \
    X(UNCLASSIFIED, "unclassified") \
    X(LOAD_STORE_PIPELINED, "load_store_pipelined") X(REGS_PER_CYCLE, "regs_per_cycle") \
    X(BRANCH_REFILL, "branch_refill")
#define AS_ENUM(id, name) TIMING_##id,
#define AS_NAME(id, name) name " "
enum { TIMING_FIELDS(AS_ENUM) TIMING_COUNT };
#define TIMING_CLASSES (TIMING_UNCLASSIFIED + 1)
/* The field names, space-separated, for the test that compares them with Python's. */
EXPORT const char mcugen_timing_fields[] = TIMING_FIELDS(AS_NAME);

struct mnemonic_class {
    const char *name;
    int cls;
};

/* Base mnemonics (no condition, no flag-setting S, no .W/.N/.F32 qualifier). */
static const struct mnemonic_class MNEMONICS[] = {
    /* data processing, bit fields, extends, saturation, packing, parallel SIMD: 1 cycle */
    {"adc", TIMING_ALU}, {"add", TIMING_ALU}, {"addw", TIMING_ALU}, {"adr", TIMING_ALU},
    {"and", TIMING_ALU}, {"asr", TIMING_ALU}, {"bfc", TIMING_ALU}, {"bfi", TIMING_ALU},
    {"bic", TIMING_ALU}, {"clz", TIMING_ALU}, {"cmn", TIMING_ALU}, {"cmp", TIMING_ALU},
    {"eor", TIMING_ALU}, {"lsl", TIMING_ALU}, {"lsr", TIMING_ALU}, {"mov", TIMING_ALU},
    {"movt", TIMING_ALU}, {"movw", TIMING_ALU}, {"mvn", TIMING_ALU}, {"neg", TIMING_ALU},
    {"nop", TIMING_ALU}, {"orn", TIMING_ALU}, {"orr", TIMING_ALU}, {"rbit", TIMING_ALU},
    {"rev", TIMING_ALU}, {"rev16", TIMING_ALU}, {"revsh", TIMING_ALU}, {"ror", TIMING_ALU},
    {"rrx", TIMING_ALU}, {"rsb", TIMING_ALU}, {"sbc", TIMING_ALU}, {"sbfx", TIMING_ALU},
    {"sub", TIMING_ALU}, {"subw", TIMING_ALU}, {"teq", TIMING_ALU}, {"tst", TIMING_ALU},
    {"ubfx", TIMING_ALU}, {"sxtb", TIMING_ALU}, {"sxth", TIMING_ALU}, {"uxtb", TIMING_ALU},
    {"uxth", TIMING_ALU}, {"sxtab", TIMING_ALU}, {"sxtah", TIMING_ALU}, {"uxtab", TIMING_ALU},
    {"uxtah", TIMING_ALU}, {"sxtb16", TIMING_ALU}, {"uxtb16", TIMING_ALU}, {"sxtab16", TIMING_ALU},
    {"uxtab16", TIMING_ALU}, {"ssat", TIMING_ALU}, {"usat", TIMING_ALU}, {"ssat16", TIMING_ALU},
    {"usat16", TIMING_ALU}, {"sel", TIMING_ALU}, {"pkhbt", TIMING_ALU}, {"pkhtb", TIMING_ALU},
    {"qadd", TIMING_ALU}, {"qsub", TIMING_ALU}, {"qdadd", TIMING_ALU}, {"qdsub", TIMING_ALU},
    /* multiplies and DSP multiply-accumulates: 1 cycle on the M4 */
    {"mul", TIMING_MUL}, {"smull", TIMING_MUL}, {"umull", TIMING_MUL}, {"smlal", TIMING_MUL},
    {"umlal", TIMING_MUL}, {"umaal", TIMING_MUL}, {"smulbb", TIMING_MUL}, {"smulbt", TIMING_MUL},
    {"smultb", TIMING_MUL}, {"smultt", TIMING_MUL}, {"smulwb", TIMING_MUL}, {"smulwt", TIMING_MUL},
    {"smlabb", TIMING_MUL}, {"smlabt", TIMING_MUL}, {"smlatb", TIMING_MUL}, {"smlatt", TIMING_MUL},
    {"smlawb", TIMING_MUL}, {"smlawt", TIMING_MUL}, {"smlalbb", TIMING_MUL}, {"smlalbt", TIMING_MUL},
    {"smlaltb", TIMING_MUL}, {"smlaltt", TIMING_MUL}, {"smlad", TIMING_MUL}, {"smladx", TIMING_MUL},
    {"smlsd", TIMING_MUL}, {"smlsdx", TIMING_MUL}, {"smlald", TIMING_MUL}, {"smlaldx", TIMING_MUL},
    {"smlsld", TIMING_MUL}, {"smlsldx", TIMING_MUL}, {"smuad", TIMING_MUL}, {"smuadx", TIMING_MUL},
    {"smusd", TIMING_MUL}, {"smusdx", TIMING_MUL}, {"smmul", TIMING_MUL}, {"smmulr", TIMING_MUL},
    {"smmla", TIMING_MUL}, {"smmlar", TIMING_MUL}, {"smmls", TIMING_MUL}, {"smmlsr", TIMING_MUL},
    {"usad8", TIMING_MUL}, {"usada8", TIMING_MUL},
    {"mla", TIMING_MLA}, {"mls", TIMING_MLA},
    {"sdiv", TIMING_DIV}, {"udiv", TIMING_DIV},
    /* single loads and stores (TBB/TBH load a byte/halfword and write PC) */
    {"ldr", TIMING_LOAD_STORE}, {"ldrb", TIMING_LOAD_STORE}, {"ldrh", TIMING_LOAD_STORE},
    {"ldrsb", TIMING_LOAD_STORE}, {"ldrsh", TIMING_LOAD_STORE}, {"ldrt", TIMING_LOAD_STORE},
    {"ldrbt", TIMING_LOAD_STORE}, {"ldrht", TIMING_LOAD_STORE}, {"ldrsbt", TIMING_LOAD_STORE},
    {"ldrsht", TIMING_LOAD_STORE}, {"ldrex", TIMING_LOAD_STORE}, {"ldrexb", TIMING_LOAD_STORE},
    {"ldrexh", TIMING_LOAD_STORE}, {"str", TIMING_LOAD_STORE}, {"strb", TIMING_LOAD_STORE},
    {"strh", TIMING_LOAD_STORE}, {"strt", TIMING_LOAD_STORE}, {"strbt", TIMING_LOAD_STORE},
    {"strht", TIMING_LOAD_STORE}, {"strex", TIMING_LOAD_STORE}, {"strexb", TIMING_LOAD_STORE},
    {"strexh", TIMING_LOAD_STORE}, {"pld", TIMING_LOAD_STORE}, {"pli", TIMING_LOAD_STORE},
    {"tbb", TIMING_LOAD_STORE}, {"tbh", TIMING_LOAD_STORE},
    {"ldrd", TIMING_LOAD_STORE_PAIR}, {"strd", TIMING_LOAD_STORE_PAIR},
    {"ldm", TIMING_MULTIPLE}, {"ldmia", TIMING_MULTIPLE}, {"ldmfd", TIMING_MULTIPLE},
    {"ldmdb", TIMING_MULTIPLE}, {"ldmea", TIMING_MULTIPLE}, {"stm", TIMING_MULTIPLE},
    {"stmia", TIMING_MULTIPLE}, {"stmea", TIMING_MULTIPLE}, {"stmdb", TIMING_MULTIPLE},
    {"stmfd", TIMING_MULTIPLE}, {"push", TIMING_MULTIPLE}, {"pop", TIMING_MULTIPLE},
    {"vldm", TIMING_MULTIPLE}, {"vldmia", TIMING_MULTIPLE}, {"vldmdb", TIMING_MULTIPLE},
    {"vstm", TIMING_MULTIPLE}, {"vstmia", TIMING_MULTIPLE}, {"vstmdb", TIMING_MULTIPLE},
    {"vpush", TIMING_MULTIPLE}, {"vpop", TIMING_MULTIPLE},
    {"b", TIMING_BRANCH}, {"bl", TIMING_BRANCH}, {"blx", TIMING_BRANCH}, {"bx", TIMING_BRANCH},
    {"cbz", TIMING_BRANCH}, {"cbnz", TIMING_BRANCH},
    /* floating point (FPv4-SP / FPv5) */
    {"vadd", TIMING_FP}, {"vsub", TIMING_FP}, {"vmul", TIMING_FP}, {"vnmul", TIMING_FP},
    {"vabs", TIMING_FP}, {"vneg", TIMING_FP}, {"vcmp", TIMING_FP}, {"vcmpe", TIMING_FP},
    {"vcvt", TIMING_FP}, {"vcvtr", TIMING_FP}, {"vcvta", TIMING_FP}, {"vcvtn", TIMING_FP},
    {"vcvtp", TIMING_FP}, {"vcvtm", TIMING_FP}, {"vcvtb", TIMING_FP}, {"vcvtt", TIMING_FP},
    {"vmov", TIMING_FP}, {"vmrs", TIMING_FP}, {"vmsr", TIMING_FP}, {"vsel", TIMING_FP},
    {"vmaxnm", TIMING_FP}, {"vminnm", TIMING_FP}, {"vrinta", TIMING_FP}, {"vrintn", TIMING_FP},
    {"vrintp", TIMING_FP}, {"vrintm", TIMING_FP}, {"vrintr", TIMING_FP}, {"vrintx", TIMING_FP},
    {"vrintz", TIMING_FP},
    {"vmla", TIMING_FP_MAC}, {"vmls", TIMING_FP_MAC}, {"vnmla", TIMING_FP_MAC}, {"vnmls", TIMING_FP_MAC},
    {"vfma", TIMING_FP_MAC}, {"vfms", TIMING_FP_MAC}, {"vfnma", TIMING_FP_MAC}, {"vfnms", TIMING_FP_MAC},
    {"vdiv", TIMING_FP_DIV}, {"vsqrt", TIMING_FP_DIV},
    {"vldr", TIMING_FP_LOAD_STORE}, {"vstr", TIMING_FP_LOAD_STORE},
    /* system, barriers, hints */
    {"dmb", TIMING_SYSTEM}, {"dsb", TIMING_SYSTEM}, {"isb", TIMING_SYSTEM}, {"mrs", TIMING_SYSTEM},
    {"msr", TIMING_SYSTEM}, {"cpsie", TIMING_SYSTEM}, {"cpsid", TIMING_SYSTEM}, {"svc", TIMING_SYSTEM},
    {"bkpt", TIMING_SYSTEM}, {"wfi", TIMING_SYSTEM}, {"wfe", TIMING_SYSTEM}, {"sev", TIMING_SYSTEM},
    {"yield", TIMING_SYSTEM}, {"udf", TIMING_SYSTEM}, {"clrex", TIMING_SYSTEM},
};

static const char *const CONDITIONS[] = {"eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs",
                                         "vc", "hi", "ls", "ge", "lt", "gt", "le", "al"};

/* Parallel add/subtract family: {s,q,sh,u,uq,uh} x {add16,sub16,add8,sub8,asx,sax}. */
static bool is_parallel_simd(const char *m)
{
    static const char *const prefixes[] = {"sh", "uq", "uh", "s", "q", "u"};
    static const char *const ops[] = {"add16", "sub16", "add8", "sub8", "asx", "sax"};
    size_t p, o;
    for (p = 0; p < sizeof prefixes / sizeof prefixes[0]; ++p) {
        const size_t n = strlen(prefixes[p]);
        if (strncmp(m, prefixes[p], n) != 0) {
            continue;
        }
        for (o = 0; o < sizeof ops / sizeof ops[0]; ++o) {
            if (strcmp(m + n, ops[o]) == 0) {
                return true;
            }
        }
    }
    return false;
}

static bool is_it(const char *m)
{
    size_t i;
    if (strncmp(m, "it", 2) != 0 || strlen(m) > 5) {
        return false;
    }
    for (i = 2; m[i] != '\0'; ++i) {
        if (m[i] != 't' && m[i] != 'e') {
            return false;
        }
    }
    return true;
}

static int lookup(const char *m)
{
    size_t i;
    for (i = 0; i < sizeof MNEMONICS / sizeof MNEMONICS[0]; ++i) {
        if (strcmp(m, MNEMONICS[i].name) == 0) {
            return MNEMONICS[i].cls;
        }
    }
    if (is_parallel_simd(m)) {
        return TIMING_ALU;
    }
    return is_it(m) ? TIMING_IT : -1;
}

/* `m` without a trailing flag-setting "s" (adds -> add), or -1. */
static int lookup_without_s(char *m)
{
    const size_t n = strlen(m);
    int cls;
    if (n < 2 || m[n - 1] != 's') {
        return -1;
    }
    m[n - 1] = '\0';
    cls = lookup(m);
    m[n - 1] = 's';
    return cls;
}

/* Registers in the first {...} list of `operands` (ranges r4-r7 counted in full), as
 * 32-bit words (a D register is two). *has_pc is set if PC is in the list. */
static int count_register_words(const char *operands, bool *has_pc)
{
    const char *p = strchr(operands, '{');
    int words = 0;
    *has_pc = false;
    if (p == NULL) {
        return 0;
    }
    ++p;
    while (*p != '\0' && *p != '}') {
        char name[8];
        size_t n = 0;
        long first, last;
        while (*p == ' ' || *p == ',') {
            ++p;
        }
        while (*p != '\0' && *p != ',' && *p != '}' && *p != '-' && *p != ' ' && n + 1 < sizeof name) {
            name[n++] = (char)tolower((unsigned char)*p++);
        }
        name[n] = '\0';
        if (n == 0) {
            break;
        }
        if (strcmp(name, "pc") == 0) {
            *has_pc = true;
        }
        first = last = isdigit((unsigned char)name[1]) ? strtol(name + 1, NULL, 10) : 0;
        if (*p == '-') { /* a range: rA-rB */
            ++p;
            while (isalpha((unsigned char)*p)) {
                ++p;
            }
            last = strtol(p, (char **)&p, 10);
        }
        words += (int)(last - first + 1) * (name[0] == 'd' ? 2 : 1);
        while (*p == ' ') {
            ++p;
        }
    }
    return words;
}

/* The class of one instruction from its disassembly ("ldr.w r3, [r2, #4]"). Also sets
 * *words (register words moved by multiple loads/stores), *writes_pc and *conditional
 * (a condition code: B<cond>, CBZ/CBNZ, or an instruction inside an IT block). */
EXPORT int mcugen_classify(const char *disas, int *words, int *writes_pc, int *conditional)
{
    char m[24];
    const char *operands;
    size_t n = 0;
    int cls;
    bool has_pc = false;
    while (*disas == ' ') {
        ++disas;
    }
    while (disas[n] != '\0' && disas[n] != ' ' && disas[n] != '.' && n + 1 < sizeof m) {
        m[n] = (char)tolower((unsigned char)disas[n]);
        ++n;
    }
    m[n] = '\0';
    operands = disas + n;
    while (*operands != '\0' && *operands != ' ') { /* the .w / .f32 qualifiers */
        ++operands;
    }
    while (*operands == ' ') {
        ++operands;
    }
    *words = 0;
    *writes_pc = 0;
    *conditional = 0;
    cls = lookup(m);
    if (cls < 0 && n > 2) { /* a condition suffix: beq, addne, addseq */
        size_t c;
        for (c = 0; c < sizeof CONDITIONS / sizeof CONDITIONS[0] && cls < 0; ++c) {
            if (strcmp(m + n - 2, CONDITIONS[c]) == 0) {
                m[n - 2] = '\0';
                cls = lookup(m);
                if (cls < 0) {
                    cls = lookup_without_s(m);
                }
                if (cls < 0) {
                    m[n - 2] = CONDITIONS[c][0];
                } else {
                    *conditional = 1;
                }
            }
        }
    }
    if (cls < 0) {
        cls = lookup_without_s(m);
    }
    if (cls < 0) {
        return TIMING_UNCLASSIFIED;
    }
    if (strcmp(m, "cbz") == 0 || strcmp(m, "cbnz") == 0) {
        *conditional = 1;
    }
    if (cls == TIMING_MULTIPLE) {
        *words = count_register_words(operands, &has_pc);
        *writes_pc = has_pc && (m[0] == 'l' || strcmp(m, "pop") == 0);
    } else if (cls == TIMING_BRANCH || strcmp(m, "tbb") == 0 || strcmp(m, "tbh") == 0) {
        *writes_pc = 1;
    } else if ((cls == TIMING_ALU || cls == TIMING_LOAD_STORE) && strncmp(operands, "pc", 2) == 0
               && (operands[2] == ',' || operands[2] == '\0') && m[0] != 's' && strcmp(m, "cmp") != 0
               && strcmp(m, "cmn") != 0 && strcmp(m, "tst") != 0 && strcmp(m, "teq") != 0) {
        *writes_pc = 1; /* mov pc, lr / add pc, rX / ldr pc, [...] */
    }
    if (cls == TIMING_FP_LOAD_STORE && (operands[0] == 'd' || operands[0] == 'D')) {
        cls = TIMING_FP_LOAD_STORE_PAIR;
    }
    return cls;
}

/* Cycles of one instruction under `timing`: `after_load_store` says the previous executed
 * instruction was a single load/store, `taken` whether a conditional PC write happens. */
static int insn_cycles(int cls, int words, int writes_pc, int conditional, const int *timing,
                       bool after_load_store, bool taken)
{
    int cycles = timing[cls];
    if (cls == TIMING_MULTIPLE) {
        const int per = timing[TIMING_REGS_PER_CYCLE] > 0 ? timing[TIMING_REGS_PER_CYCLE] : 1;
        cycles += (words + per - 1) / per;
    }
    if (cls == TIMING_LOAD_STORE && !writes_pc && after_load_store) {
        cycles = timing[TIMING_LOAD_STORE_PIPELINED];
    }
    if (writes_pc && (taken || !conditional)) {
        cycles += timing[TIMING_BRANCH_REFILL];
    }
    return cycles;
}

static bool is_single_load_store(int cls, int writes_pc)
{
    return cls == TIMING_LOAD_STORE && !writes_pc;
}

/* For tests (through ctypes): the cycles of one instruction given its disassembly. */
EXPORT int mcugen_insn_cycles(const char *disas, const int *timing, int after_load_store, int taken)
{
    int words, writes_pc, conditional;
    const int cls = mcugen_classify(disas, &words, &writes_pc, &conditional);
    return insn_cycles(cls, words, writes_pc, conditional, timing, after_load_store != 0, taken != 0);
}

/* --- the plugin ------------------------------------------------------------------------ */

#define MAX_MARKERS 16
#define MAX_UNCLASSIFIED_NAMES 8
#define NO_ADDRESS UINT64_MAX

struct block {              /* one translated block, for its execution callback */
    uint64_t vaddr;
    uint64_t fallthrough;   /* address after its last instruction */
    uint64_t cycles;        /* its instructions' cycles, conditional PC writes not taken */
    uint64_t unclassified;  /* instructions of class unclassified */
    uint32_t taken_extra;   /* cycles added when its conditional PC write is taken */
    uint32_t pipelined_saving; /* cycles saved when its first instruction pipelines */
    bool ends_conditional;  /* last instruction is a conditional PC write */
    bool first_load_store;  /* first / last instruction is a single load/store */
    bool last_load_store;
};

struct marker_hit {         /* one marker instruction in a translated block */
    unsigned marker;
    uint64_t insns_from_marker; /* n - k */
    uint64_t cycles_from_marker; /* cycles of instructions k..n-1 */
};

static uint64_t executed;            /* instructions executed so far (one vCPU) */
static uint64_t cycles;              /* estimated cycles so far */
static uint64_t unclassified;        /* executed instructions of class unclassified */
static uint64_t pending_fallthrough = NO_ADDRESS; /* of a block ending in a conditional PC write */
static uint32_t pending_taken_extra;
static bool previous_load_store;
static int timing[TIMING_COUNT];
static bool timing_given;
static uint64_t marker_address[MAX_MARKERS];
static bool marker_set[MAX_MARKERS];
static int marker_count;
static char unclassified_names[MAX_UNCLASSIFIED_NAMES][16];
static int unclassified_name_count;
static FILE *log_file;

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    const struct marker_hit *hit = userdata;
    (void)vcpu_index;
    fprintf(log_file, "%u %" PRIu64 " %" PRIu64 "\n", hit->marker, executed - hit->insns_from_marker,
            cycles - hit->cycles_from_marker);
}

static void on_block(unsigned int vcpu_index, void *userdata)
{
    const struct block *b = userdata;
    (void)vcpu_index;
    if (pending_fallthrough != NO_ADDRESS && b->vaddr != pending_fallthrough) {
        cycles += pending_taken_extra; /* the previous block's conditional branch was taken */
    }
    if (previous_load_store && b->first_load_store) {
        cycles -= b->pipelined_saving;
    }
    cycles += b->cycles;
    unclassified += b->unclassified;
    pending_fallthrough = b->ends_conditional ? b->fallthrough : NO_ADDRESS;
    pending_taken_extra = b->taken_extra;
    previous_load_store = b->last_load_store;
}

static void remember_unclassified(const char *disas)
{
    int i;
    size_t n = 0;
    char name[16];
    while (disas[n] != '\0' && disas[n] != ' ' && n + 1 < sizeof name) {
        name[n] = disas[n];
        ++n;
    }
    name[n] = '\0';
    for (i = 0; i < unclassified_name_count; ++i) {
        if (strcmp(unclassified_names[i], name) == 0) {
            return;
        }
    }
    if (unclassified_name_count < MAX_UNCLASSIFIED_NAMES) {
        memcpy(unclassified_names[unclassified_name_count++], name, n + 1);
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    const size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t *insn_cost = calloc(n ? n : 1, sizeof *insn_cost);
    struct block *b = calloc(1, sizeof *b);
    bool after_load_store = false;
    size_t k;
    int m;
    (void)id;
    if (insn_cost == NULL || b == NULL) {
        qemu_plugin_outs("mcugen_icount: out of memory\n");
        abort();
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->fallthrough = b->vaddr;
    for (k = 0; k < n && timing_given; ++k) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        char *disas = qemu_plugin_insn_disas(insn);
        int words, writes_pc, conditional, cls;
        cls = mcugen_classify(disas != NULL ? disas : "", &words, &writes_pc, &conditional);
        if (cls == TIMING_UNCLASSIFIED) {
            b->unclassified += 1;
            remember_unclassified(disas != NULL ? disas : "?");
        }
        free(disas); /* glib's g_free is free() */
        insn_cost[k] = (uint64_t)insn_cycles(cls, words, writes_pc, conditional, timing, after_load_store, false);
        b->cycles += insn_cost[k];
        b->fallthrough = qemu_plugin_insn_vaddr(insn) + qemu_plugin_insn_size(insn);
        if (k == 0 && is_single_load_store(cls, writes_pc)) {
            b->first_load_store = true;
            b->pipelined_saving = (uint32_t)(timing[TIMING_LOAD_STORE] - timing[TIMING_LOAD_STORE_PIPELINED]);
        }
        if (k + 1 == n) {
            b->last_load_store = is_single_load_store(cls, writes_pc);
            if (writes_pc && conditional) {
                b->ends_conditional = true;
                b->taken_extra = (uint32_t)(insn_cycles(cls, words, writes_pc, conditional, timing, after_load_store, true)
                                            - (int)insn_cost[k]);
            }
        }
        after_load_store = is_single_load_store(cls, writes_pc);
    }
    if (timing_given) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, b);
    } else {
        free(b);
    }
    for (k = 0; k < n; ++k) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        const uint64_t address = qemu_plugin_insn_vaddr(insn);
        for (m = 0; m < marker_count; ++m) {
            if (marker_set[m] && address == marker_address[m]) {
                struct marker_hit *hit = calloc(1, sizeof *hit);
                size_t j;
                if (hit == NULL) {
                    abort();
                }
                hit->marker = (unsigned)m;
                hit->insns_from_marker = n - k;
                for (j = k; j < n; ++j) {
                    hit->cycles_from_marker += insn_cost[j];
                }
                /* kept for as long as the translated block may run: never freed */
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, hit);
            }
        }
    }
    free(insn_cost);
}

static void report_at_exit(qemu_plugin_id_t id, void *userdata)
{
    int i;
    (void)id;
    (void)userdata;
    fprintf(log_file, "total %" PRIu64 " %" PRIu64 "\n", executed, cycles);
    fprintf(log_file, "unclassified %" PRIu64, unclassified);
    for (i = 0; i < unclassified_name_count; ++i) {
        fprintf(log_file, " %s", unclassified_names[i]);
    }
    fprintf(log_file, "\n");
    fclose(log_file);
    log_file = NULL;
}

static bool parse_timing(const char *text)
{
    int i;
    for (i = 0; i < TIMING_COUNT; ++i) {
        char *end;
        const long value = strtol(text, &end, 10);
        if (end == text || value < 0 || value > 1000 || (*end != (i + 1 < TIMING_COUNT ? ':' : '\0'))) {
            return false;
        }
        timing[i] = (int)value;
        text = end + 1;
    }
    return timing[TIMING_LOAD_STORE_PIPELINED] <= timing[TIMING_LOAD_STORE];
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
        } else if (strncmp(arg, "timing=", 7) == 0) {
            if (!parse_timing(arg + 7)) {
                qemu_plugin_outs("mcugen_icount: timing= needs one value per timing field, ':'-separated\n");
                return -1;
            }
            timing_given = true;
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
