/* Board layer used by mcugen's firmware main.c: exit, stack measurement, fault status. */
#ifndef MCUGEN_BOARD_H
#define MCUGEN_BOARD_H

#include <stdint.h>

/* Word written over the free stack; a word that no longer holds it has been used. */
#define MCUGEN_STACK_PATTERN 0x5AC3A55Au

/* Paints the stack from its limit up to the caller's stack pointer and returns that
 * stack pointer. Call it right before the code to measure, from the same function. */
uintptr_t mcugen_stack_paint(void);

/* Bytes of stack used below `painted_sp` (a value returned by mcugen_stack_paint) since
 * it was painted: the deepest word that no longer holds MCUGEN_STACK_PATTERN. */
uint32_t mcugen_stack_used(uintptr_t painted_sp);

/* Non-zero if the lowest stack word was overwritten since the stack was painted: the
 * stack overflowed (or came within 4 bytes of it). */
int mcugen_stack_exhausted(void);

/* Size of the stack region reserved by the linker script. */
uint32_t mcugen_stack_reserved(void);

/* Ends the program with `status`: the semihosting exit status in semihosting builds,
 * else it stores `status` in mcugen_exit_status and sleeps forever. */
void mcugen_exit(int status) __attribute__((noreturn));

/* Last exit status (real boards keep it in RAM for a debugger to read), and the fault
 * report: exception number (0 = no fault), CFSR, HFSR and the faulting PC. */
extern volatile int32_t mcugen_exit_status;
extern volatile uint32_t mcugen_fault_info[4];

/* Formats `value` in decimal (or 0x-prefixed hex) into `out` (>= 12 bytes); returns `out`. */
char *mcugen_format_u32(char *out, uint32_t value);
char *mcugen_format_hex32(char *out, uint32_t value);

/* The DWT cycle counter: mcugen_cycle_counter_start() enables and zeroes it and returns 1,
 * or returns 0 if the core has none (Cortex-M0, or an emulator such as QEMU, where the
 * DWT reads as zero). mcugen_cycle_count() reads it (0 without a counter). */
int mcugen_cycle_counter_start(void);
uint32_t mcugen_cycle_count(void);

#endif /* MCUGEN_BOARD_H */
