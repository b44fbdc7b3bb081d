#include "textflag.h"

// func dot4AVX(a *float32, stride int, b *float32, n int, out *[4]float32)
// out[j] = sum_i a[j*stride+i] * b[i], j = 0..3; n a positive multiple of 8.
TEXT ·dot4AVX(SB), NOSPLIT, $0-40
	MOVQ a+0(FP), SI
	MOVQ stride+8(FP), R8
	SHLQ $2, R8
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	SHLQ $2, CX
	MOVQ out+32(FP), DI
	LEAQ (SI)(R8*1), R9
	LEAQ (R9)(R8*1), R10
	LEAQ (R10)(R8*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ AX, AX

dot4loop:
	VMOVUPS     (DX)(AX*1), Y4
	VFMADD231PS (SI)(AX*1), Y4, Y0
	VFMADD231PS (R9)(AX*1), Y4, Y1
	VFMADD231PS (R10)(AX*1), Y4, Y2
	VFMADD231PS (R11)(AX*1), Y4, Y3
	ADDQ        $32, AX
	CMPQ        AX, CX
	JLT         dot4loop

	VHADDPS      Y1, Y0, Y0
	VHADDPS      Y3, Y2, Y2
	VHADDPS      Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMOVUPS      X0, (DI)
	VZEROUPPER
	RET

// func addAVX(dst, src *float32, n int)
// dst[i] += src[i]; n a positive multiple of 8.
TEXT ·addAVX(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHLQ $2, CX
	XORQ AX, AX

addloop:
	VMOVUPS (DI)(AX*1), Y0
	VADDPS  (SI)(AX*1), Y0, Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ    $32, AX
	CMPQ    AX, CX
	JLT     addloop
	VZEROUPPER
	RET

// func toHalfF16C(dst *uint16, src *float32, n int)
// Rounds n floats (a positive multiple of 8) to binary16, ties to even.
TEXT ·toHalfF16C(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ AX, AX

tohalfloop:
	VMOVUPS   (SI)(AX*4), Y0
	VCVTPS2PH $0, Y0, X1
	VMOVUPS   X1, (DI)(AX*2)
	ADDQ      $8, AX
	CMPQ      AX, CX
	JLT       tohalfloop
	VZEROUPPER
	RET
