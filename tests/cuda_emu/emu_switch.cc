// The emulator's context switch on x86-64 Linux (System V ABI): saves the callee-saved
// registers on the current stack, stores the stack pointer, loads the other one, restores.
#if defined(__x86_64__) && defined(__linux__)
asm(R"(
  .text
  .globl chorus_emu_switch
  .type chorus_emu_switch, @function
chorus_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size chorus_emu_switch, .-chorus_emu_switch
  .section .note.GNU-stack,"",@progbits
)");
#endif
