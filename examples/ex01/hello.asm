; write(1, msg, len); exit(0)
global _start
section .text
_start: mov rax, 1
        mov rdi, 1
        mov rsi, msg
        mov rdx, len
        syscall
        mov rax, 60
        xor rdi, rdi
        syscall
section .data
msg: db "hello from nasm", 10
len: equ $ - msg
