/* vtree.h: the halving tree that reduces 16 vectors of 16 lanes at once (GCC vector extensions,
 * any 16-lane element type): out lane k = OP over the 16 lanes of input k, lane l combined with
 * lane l + 8, then + 4, + 2, + 1. Used by attention's dot products (engine/attn.c, where this
 * order defines the bits) and by the activation quantizer's block maxima and sums (gemm.c). */
#ifndef LFM2_ENGINE_VTREE_H
#define LFM2_ENGINE_VTREE_H

/* First step, inputs a and b (2m and 2m + 1): lanes 0-7 a's l OP (l + 8), lanes 8-15 b's. */
#define VTREE_PAIR(a, b, OP)                                                                       \
    OP(__builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),      \
       __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,     \
                               31))

/* The rest, from t[m] = VTREE_PAIR(input 2m, input 2m + 1), m < 8; T is the vector type. Unrolled
 * so every step stays in registers (as loops over stack arrays the vectors go through memory). */
#define VTREE_REST(T, t, out, OP)                                                                  \
    do {                                                                                           \
        T u_[4], w_[2];                                                                            \
        _Pragma("GCC unroll 4") for (int m_ = 0; m_ < 4; m_++) u_[m_] =                            \
            OP(__builtin_shufflevector(t[2 * m_], t[2 * m_ + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, \
                                       18, 19, 24, 25, 26, 27),                                    \
               __builtin_shufflevector(t[2 * m_], t[2 * m_ + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20,   \
                                       21, 22, 23, 28, 29, 30, 31));                               \
        _Pragma("GCC unroll 2") for (int m_ = 0; m_ < 2; m_++) w_[m_] =                            \
            OP(__builtin_shufflevector(u_[2 * m_], u_[2 * m_ + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16,   \
                                       17, 20, 21, 24, 25, 28, 29),                                \
               __builtin_shufflevector(u_[2 * m_], u_[2 * m_ + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, \
                                       19, 22, 23, 26, 27, 30, 31));                               \
        (out) = OP(__builtin_shufflevector(w_[0], w_[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20,    \
                                           22, 24, 26, 28, 30),                                    \
                   __builtin_shufflevector(w_[0], w_[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21,    \
                                           23, 25, 27, 29, 31));                                   \
    } while (0)

#define VTREE_ADD(x, y) ((x) + (y))

#endif
