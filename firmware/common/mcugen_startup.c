/* Cortex-M start-up for mcugen firmware: vector table, reset, fault reports, stack painting. */
#include "mcugen_board.h"

#if MCUGEN_SEMIHOSTING
#include "mcugen_semihost.h"
#endif

/* Symbols of the linker script (templates/firmware/linker.ld.j2). */
extern uint32_t __stack_limit__[];
extern uint32_t __stack_top__[];
extern uint32_t __data_load__[];
extern uint32_t __data_start__[];
extern uint32_t __data_end__[];
extern uint32_t __bss_start__[];
extern uint32_t __bss_end__[];

int main(void);

void mcugen_reset_handler(void) __attribute__((naked, noreturn));
void mcugen_fault_handler(void) __attribute__((naked));
void mcugen_startup(void) __attribute__((noreturn, used));
void mcugen_fault_report(const uint32_t *frame, uint32_t exc_return) __attribute__((noreturn, used));

volatile int32_t mcugen_exit_status;
volatile uint32_t mcugen_fault_info[4];

/* The fault report runs on its own stack: the fault may come from a stack overflow. */
uint32_t mcugen_fault_stack[64] __attribute__((aligned(8), used));

/* 16 system exceptions and 16 interrupts; interrupts are never enabled, so any of them
 * arriving is reported like a fault. Entry 0 is the initial stack pointer. */
#define MCUGEN_VECTOR_COUNT 32
#define FAULT ((uintptr_t)mcugen_fault_handler)

__attribute__((section(".vectors"), used)) const uintptr_t mcugen_vectors[MCUGEN_VECTOR_COUNT] = {
    (uintptr_t)__stack_top__, (uintptr_t)mcugen_reset_handler,
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, /* NMI, HardFault, MemManage, BusFault, UsageFault, SecureFault */
    0, 0, 0,                                  /* reserved */
    FAULT, FAULT, 0, FAULT, FAULT,            /* SVCall, DebugMonitor, reserved, PendSV, SysTick */
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT,
    FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT, FAULT};

/* First instructions after reset: grant full access to CP10/CP11 (the FPU, and MVE on
 * Cortex-M55) before any compiled code may touch a floating-point register. */
void mcugen_reset_handler(void)
{
    __asm__ volatile(
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
        "ldr r0, =0xE000ED88\n" /* CPACR */
        "ldr r1, [r0]\n"
        "orr r1, r1, #0x00F00000\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
#endif
        "b mcugen_startup\n"
        ".ltorg\n");
}

#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)

/* Stack overflow protection. The stack sits at the bottom of RAM and grows down.
 * Armv8-M: MSPLIM turns an overflow into a precise UsageFault (STKOF).
 * Armv7-M: the linker script reserves __stack_guard_size__ bytes (a power of two, aligned
 * to its size) right below __stack_limit__; one MPU region makes exactly those bytes
 * inaccessible (MemManage fault). Nothing else changes: the default memory map stays in
 * force everywhere else (PRIVDEFENA), so vendor areas (FICR/UICR, unique ID, system
 * memory) stay readable. */
extern uint8_t __stack_guard__[];
extern uint8_t __stack_guard_size__[]; /* an absolute symbol: its address is the size */

static void protect_stack(void)
{
#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
    __asm__ volatile("msr msplim, %0" : : "r"(__stack_limit__));
#else
    const uint32_t size = (uint32_t)(uintptr_t)__stack_guard_size__;
    if (size >= 32u && (size & (size - 1u)) == 0u) {
        MPU_RNR = 0u;
        MPU_RBAR = (uint32_t)(uintptr_t)__stack_guard__;
        MPU_RASR = (1u << 28)                                        /* XN */
                   | (0u << 24)                                      /* AP: no access */
                   | ((uint32_t)(__builtin_ctz(size) - 1) << 1)      /* SIZE: 2^(SIZE+1) bytes */
                   | 1u;                                             /* ENABLE */
        MPU_CTRL = (1u << 2) | 1u;                                   /* PRIVDEFENA | ENABLE */
        __asm__ volatile("dsb\n"
                         "isb\n" ::: "memory");
    }
#endif
}

#define SCB_CPUID (*(volatile const uint32_t *)0xE000ED00u)
#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)

int mcugen_cycle_counter_start(void)
{
    DEMCR |= 1u << 24;        /* TRCENA: power the DWT */
    if (((SCB_CPUID >> 4) & 0xFFFu) == 0xC27u) {
        DWT_LAR = 0xC5ACCE55u; /* Cortex-M7: unlock the DWT's software lock */
    }
    if ((DWT_CTRL & (1u << 25)) != 0u) {
        return 0;             /* NOCYCCNT */
    }
    DWT_CYCCNT = 0u;
    DWT_CTRL |= 1u;           /* CYCCNTENA */
    /* An emulator without a DWT reads zero: the counter has not moved. */
    __asm__ volatile("nop\nnop\nnop\nnop" ::: "memory");
    return DWT_CYCCNT != 0u;
}

uint32_t mcugen_cycle_count(void)
{
    return DWT_CYCCNT;
}

void mcugen_startup(void)
{
    const uint32_t *src = __data_load__;
    uint32_t *dst;
    /* Report MemManage, BusFault and UsageFault by name instead of as HardFault. */
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
    protect_stack();
    /* .data has its load image in flash; copy it unless it was loaded in place. */
    if (src != __data_start__) {
        for (dst = __data_start__; dst < __data_end__; ++dst, ++src) {
            *dst = *src;
        }
    }
    for (dst = __bss_start__; dst < __bss_end__; ++dst) {
        *dst = 0u;
    }
    (void)mcugen_stack_paint();
    mcugen_exit(main());
}

/* Naked so that it has no frame of its own: it paints up to the caller's stack pointer. */
__attribute__((naked, noinline)) uintptr_t mcugen_stack_paint(void)
{
    __asm__ volatile(
        "ldr r1, =__stack_limit__\n"
        "ldr r2, =0x5AC3A55A\n" /* MCUGEN_STACK_PATTERN */
        "mov r0, sp\n"
        "1:\n"
        "cmp r1, r0\n"
        "bhs 2f\n"
        "str r2, [r1], #4\n"
        "b 1b\n"
        "2:\n"
        "bx lr\n"
        ".ltorg\n");
}

uint32_t mcugen_stack_used(uintptr_t painted_sp)
{
    const volatile uint32_t *word = __stack_limit__;
    while ((uintptr_t)word < painted_sp && *word == MCUGEN_STACK_PATTERN) {
        ++word;
    }
    return (uint32_t)(painted_sp - (uintptr_t)word);
}

int mcugen_stack_exhausted(void)
{
    return *(const volatile uint32_t *)__stack_limit__ != MCUGEN_STACK_PATTERN;
}

uint32_t mcugen_stack_reserved(void)
{
    return (uint32_t)((uintptr_t)__stack_top__ - (uintptr_t)__stack_limit__);
}

void mcugen_exit(int status)
{
    mcugen_exit_status = status;
#if MCUGEN_SEMIHOSTING
    mcugen_sh_exit(status);
#else
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}

/* One handler for every unexpected exception: pass the stacked frame and EXC_RETURN,
 * then continue on mcugen_fault_stack (the program never returns from a fault). */
void mcugen_fault_handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "mov r1, lr\n"
        "ldr r2, =mcugen_fault_stack + 256\n"
        "msr msp, r2\n"
        "b mcugen_fault_report\n"
        ".ltorg\n");
}

#if MCUGEN_SEMIHOSTING
static const char *exception_name(uint32_t number)
{
    static const char *const names[16] = {
        "Thread", "Reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault", "SecureFault",
        "Reserved", "Reserved", "Reserved", "SVCall", "DebugMonitor", "Reserved", "PendSV", "SysTick"};
    return number < 16u ? names[number] : "IRQ";
}

static void print_field(const char *label, uint32_t value)
{
    char text[12];
    mcugen_sh_print_error(label);
    mcugen_sh_print_error(mcugen_format_hex32(text, value));
}
#endif

void mcugen_fault_report(const uint32_t *frame, uint32_t exc_return)
{
    uint32_t ipsr;
    uint32_t pc = 0u;
    const uintptr_t at = (uintptr_t)frame;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    /* Read the stacked PC only if the frame lies inside the stack region. */
    if (at >= (uintptr_t)__stack_limit__ && at + 32u <= (uintptr_t)__stack_top__) {
        pc = frame[6];
    }
    mcugen_fault_info[0] = ipsr;
    mcugen_fault_info[1] = *(volatile const uint32_t *)0xE000ED28u; /* CFSR */
    mcugen_fault_info[2] = *(volatile const uint32_t *)0xE000ED2Cu; /* HFSR */
    mcugen_fault_info[3] = pc;
#if MCUGEN_SEMIHOSTING
    {
        char text[12];
        mcugen_sh_print_error("MCUGEN_FAULT=");
        mcugen_sh_print_error(exception_name(ipsr));
        mcugen_sh_print_error(" exception=");
        mcugen_sh_print_error(mcugen_format_u32(text, ipsr));
        print_field(" pc=", pc);
        print_field(" cfsr=", mcugen_fault_info[1]);
        print_field(" hfsr=", mcugen_fault_info[2]);
        print_field(" exc_return=", exc_return);
        if ((mcugen_fault_info[1] & 0x80u) != 0u) { /* CFSR.MMARVALID: the address of a MemManage fault */
            print_field(" mmfar=", *(volatile const uint32_t *)0xE000ED34u);
        }
        mcugen_sh_print_error("\n");
    }
#else
    (void)exc_return;
#endif
    /* Exit status 100 + exception number: 103 HardFault, 104 MemManage, 105 BusFault,
     * 106 UsageFault, 107 SecureFault. */
    mcugen_exit(100 + (int)ipsr);
}

char *mcugen_format_u32(char *out, uint32_t value)
{
    char digits[10];
    int n = 0;
    int i = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        out[i++] = digits[--n];
    }
    out[i] = '\0';
    return out;
}

char *mcugen_format_hex32(char *out, uint32_t value)
{
    static const char hex[] = "0123456789abcdef";
    int i;
    out[0] = '0';
    out[1] = 'x';
    for (i = 0; i < 8; ++i) {
        out[2 + i] = hex[(value >> (28 - 4 * i)) & 0xFu];
    }
    out[10] = '\0';
    return out;
}
