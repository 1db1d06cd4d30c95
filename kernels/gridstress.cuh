// gridstress model v3 (docs/model.md): the arithmetic of one cell, shared by
// the CUDA kernels (grid.cu) and their C++ host build (host.cpp, used
// by the tests to check this code against the NumPy backend without a GPU).
//
// Every expression follows the NumPy backend (gridstress/model.py) operation
// by operation, in the same order, in float64; the module is compiled with
// FMA contraction off (--fmad=false on the GPU, -ffp-contract=off on the
// host), so the two backends differ only where the maths libraries' pow()
// differ in the last bit.
//
// Work layout.  The path cells of a block are indexed by a pair (a, b):
//   a  the appraisal group: deflation d, discount rate y, generation shock j
//      and its date t_g, and the market's appraisal deflation d_a, which fix
//      the rent index, the fleet's net cash flow and the appraisal G_k;
//   b  the mining group: crypto drawdown c and drawdown periods D.
// The recovery cells q (haircut, crypto haircut, liquidation cost) share
// every default path: each defaulted loan's recovery is evaluated for all q.
// Without a market step (a deep market in every cell of the block), a thread
// owns one path cell (a, b) and GS_QT recovery cells, and walks the
// loans in canonical order, each loan period by period; the sums over loans
// stay in registers.  The a-only quantities of a tile of loans
// (net cash flow of the fleet and G_k, k = 1..n) are built once per thread
// block in shared memory, for the block's few a values, and read by every
// thread of the block; so are the loan-independent factors they are built
// from (the rent index (1 - d)^(t_j), the discount factors and, for the
// market's appraisal, the expected-rent factors (1 - d_a)^(t_i)), and the
// path of each loan without mining or crypto collateral, which is the same
// for every b (GS_B_FREE).  With the market step the loans of a path cell are
// stepped period-outer instead (gs_market_path, at the end of this file).
#ifndef GRIDSTRESS_CUH
#define GRIDSTRESS_CUH

// Recovery cells per thread: a thread keeps the sums of GS_QT recovery cells
// in registers (set at compile time; gridstress/kernels/launch.py picks it).
#ifndef GS_QT
#define GS_QT 1
#endif
// Segments whose loss sums are kept in registers: the portfolio's segment
// count, or 0 to add segment losses in global memory (many segments).
#ifndef GS_NSEG_REG
#define GS_NSEG_REG 0
#endif

// 1: the path kernel writes each loan's default record (two-stage mode, for
// many recovery cells) instead of summing its recoveries.
#ifndef GS_RECORDS
#define GS_RECORDS 0
#endif

// 1: the kernels write each loan's default time and loss (per-loan results);
// a build without them spends no registers on them.
#ifndef GS_PER_LOAN
#define GS_PER_LOAN 0
#endif

// Model v3's scenario shapes, each a build of its own so that a run without
// them compiles none of their code (no extra load, branch or shared memory):
// GS_RENT_SHAPE=1: the rent index takes the rent path and the generation
// shock, and an a value with appraisal_deflation given (not NaN) has the
// market's appraisal; only the tables phase reads them.
// GS_CRYPTO_PATH=1: the crypto price index takes the crypto path, in the
// period loop.
#ifndef GS_RENT_SHAPE
#define GS_RENT_SHAPE 0
#endif
#ifndef GS_CRYPTO_PATH
#define GS_CRYPTO_PATH 0
#endif

#if defined(__CUDACC__)
#define GS_UNROLL _Pragma("unroll")
#define GS_FN __device__ __forceinline__
// A load through the read-only data cache (the portfolio does not change
// while a kernel runs).
#define GS_LDG(p) __ldg(p)
// x itself, through a copy the compiler cannot see into: keeps it from
// folding a value computed once back into the expression it came from.
__device__ __forceinline__ double gs_opaque(double x) {
    double y;
    asm("mov.b64 %0, %1;" : "=d"(y) : "d"(x));
    return y;
}
#define GS_INF __longlong_as_double(0x7ff0000000000000LL)
#define GS_NAN __longlong_as_double(0x7ff8000000000000LL)
#else
#include <math.h>
#include <limits>
#define GS_FN static inline
#define GS_UNROLL
#define GS_LDG(p) (*(p))
static inline double gs_opaque(double x) { return x; }
#define GS_INF (std::numeric_limits<double>::infinity())
#define GS_NAN (std::numeric_limits<double>::quiet_NaN())
#endif

// Loan matrix columns, flags, output rows and the argument block's field
// list: generated from the tables of gridstress/kernels/tables.py (kernel_defines).
#include "gs_tables.h"

// Default records of the two-stage mode (GS_REC_EAD .. GS_REC_DISCOUNT, from
// gs_tables.h), stored [row][loan][path cell of rec_begin <= a < rec_end];
// an EAD of 0 marks a loan without default (nothing to recover).  The market
// kernel keeps each loan's state in the same rows and two more: its status
// (the count of consecutive covenant breaches while it runs, -tau once it has
// defaulted) and its trigger; the cash row holds the running cash account
// until the default.  A running loan's period reads two rows and writes one
// or two.

// Everything one launch needs, passed by value.
struct GsArgs {
    const double* loan_f;     // [L][GS_NF]
    const int* loan_i;        // [L][GS_NI]
    const double* debt_service;  // [L][K+1]
    const double* owed;          // [L][K+1]
    const double* balance;       // [L][K+1]
    const double* book_value;    // [L][K+1] BV_k of the pledged fleet
    const double* rent_path;     // [J+1] P(t_k), k = 0..J (ones without a rent path)
    const double* crypto_path;   // [J+1] Q(t_k), k = 0..J (ones without a crypto path)
    const double* a_deflation;   // [A]
    const double* a_discount;    // [A]
    const double* a_shock;       // [A] generation_shock j
    const double* a_shock_period;  // [A] n_g: the shock applies to periods k > n_g
    const double* a_appraisal;   // [A] appraisal_deflation d_a, NaN: the foresight appraisal
    const double* b_crypto;      // [B]
    const double* b_periods;     // [B]
    const double* b_depth;       // [B] market_depth_gpus W
    const double* b_half_life;   // [B] market_half_life_years T
    const double* b_book_share;  // [B] book_share theta
    const double* q_keep;        // [Q] (1 - liquidation_cost) * (1 - haircut)
    const double* q_keep_crypto; // [Q] (1 - liquidation_cost) * (1 - crypto_haircut)
    double* out_q;               // [GS_QV_SEG + S][A][Q][B]
    double* out_p;               // [GS_NPV][A][B]
    double* records;             // [GS_NREC or GS_NSTATE][L][(rec_end - rec_begin) * B]
    double* tables;              // market kernel: [rec_end - rec_begin][L][2K + 1] (net cash
                                 // flow, G_k, fleet PV), then [rec_end - rec_begin][KD]
                                 // discount factors
    double* out_loan_loss;       // [L][A][Q][B] per-loan losses, or null
    double* out_loan_years;      // [L][A][B] per-loan default times, or null
    int n_loans, K1, A, B, Q, n_segments;
    int KD;                      // periods of the discount factors: max(K, max n_refi)
    int J;                       // periods of the rent index: K, max n + n_refi, max n_life
    int JA;                      // expected-rent factors per a value: J with a market
                                 // appraisal in the launch (GS_RENT_SHAPE), else 0
    int a_begin, a_end;          // the a values this launch covers
    int rec_begin, rec_end;      // the a values the default records cover
    int na_block, nb_block;      // a and b values per thread block
    int loan_tile;               // loans per shared-memory tile
    int rb, rq, rec_tile;        // recovery kernel: b lanes and q tiles per block, loans per copy
    double dt, hours, total_principal, principal_wal;
};
GS_CHECK_ARGS_LAYOUT  // every offset as gridstress/kernels/tables.py packs it

// A thread block's share of the grid: na_block x nb_block path cells and the
// recovery cells q0 .. q0 + GS_QT - 1.
struct GsBlock {
    int a0, b0, q0;
};

GS_FN int gs_path_blocks(const GsArgs& g) {
    const int nat = (g.a_end - g.a_begin + g.na_block - 1) / g.na_block;
    const int nbt = (g.B + g.nb_block - 1) / g.nb_block;
    return nat * nbt;
}

GS_FN GsBlock gs_block(const GsArgs& g, int block_index) {
    const int nbt = (g.B + g.nb_block - 1) / g.nb_block;
    const int path_blocks = gs_path_blocks(g);
    const int r = block_index % path_blocks;
    GsBlock blk;
    blk.q0 = (block_index / path_blocks) * GS_QT;
    blk.a0 = g.a_begin + (r / nbt) * g.na_block;
    blk.b0 = (r % nbt) * g.nb_block;
    return blk;
}

// Thread t of a block: its path cell (a, b), and whether it has one.
GS_FN bool gs_path_cell(const GsArgs& g, GsBlock blk, int t, int& a, int& b) {
    a = blk.a0 + t / g.nb_block;
    b = blk.b0 + t % g.nb_block;
    return t < g.na_block * g.nb_block && a < g.a_end && b < g.B;
}

GS_FN long gs_q_index(const GsArgs& g, int var, int a, int q, int b) {
    return (((long)var * g.A + a) * g.Q + q) * g.B + b;
}

GS_FN long gs_p_index(const GsArgs& g, int var, int a, int b) {
    return ((long)var * g.A + a) * g.B + b;
}

GS_FN long gs_rec_index(const GsArgs& g, int field, int l, int a, int b) {
    const long cells = (long)(g.rec_end - g.rec_begin) * g.B;
    return ((long)field * g.n_loans + l) * cells + (long)(a - g.rec_begin) * g.B + b;
}

// Shared-memory tables of one tile: net cash flow of the fleet and G_k per
// (a value of the block, loan of the tile, period k = 1..K), index k - 1.
GS_FN long gs_table_index(const GsArgs& g, int ia, int lt, int k) {
    return ((long)ia * g.loan_tile + lt) * (g.K1 - 1) + (k - 1);
}

GS_FN long gs_table_size(const GsArgs& g) {
    return (long)g.na_block * g.loan_tile * (g.K1 - 1);
}

// After the two tables: the discount factor (1 + y)^(-t_k) per (a value of the
// block, period k = 1..KD), shared by all loans.
GS_FN long gs_discount_index(const GsArgs& g, int ia, int k) {
    return 2 * gs_table_size(g) + (long)ia * g.KD + (k - 1);
}

// The expected-rent factors per a value: none outside a GS_RENT_SHAPE build,
// so that the v2 build's shared-memory layout folds to what it was.
#if GS_RENT_SHAPE
#define GS_JA(g) ((g).JA)
#else
#define GS_JA(g) 0
#endif

// Factors per value of a: KD discount factors, J rent indices, JA expected-rent factors.
GS_FN int gs_factors_per_a(const GsArgs& g) {
    return g.KD + g.J + GS_JA(g);
}

// After the discount factors: the rent index (1 - d)^(t_j) per (a value of the
// block, period j = 1..J), shared by all loans (m_j is r0 times it, and the
// rent path and the generation shock in a GS_RENT_SHAPE build).
GS_FN long gs_rent_index(const GsArgs& g, int ia, int j) {
    return 2 * gs_table_size(g) + (long)g.na_block * g.KD + (long)ia * g.J + (j - 1);
}

// After the rent index: the market appraisal's expected-rent factors
// (1 - d_a)^(t_i) per (a value of the block, i = 1..JA).
GS_FN long gs_expect_index(const GsArgs& g, int ia, int i) {
    return 2 * gs_table_size(g) + (long)g.na_block * (g.KD + g.J) + (long)ia * GS_JA(g)
           + (i - 1);
}

// After the factors, per (a value of the block, loan of the tile), the
// GS_NPATH rows GS_PATH_*: the fleet's part of the cash-flow refinancing
// offer, and for a b-free loan its path (GsPath, with its lowest DSCR),
// built in phase 1.
GS_FN long gs_path_index(const GsArgs& g, int ia, int lt) {
    return 2 * gs_table_size(g) + (long)g.na_block * gs_factors_per_a(g)
           + ((long)ia * g.loan_tile + lt) * GS_NPATH;
}

// Doubles of shared memory a thread block uses.
GS_FN long gs_shared_doubles(const GsArgs& g) {
    return 2 * gs_table_size(g) + (long)g.na_block * gs_factors_per_a(g)
           + (long)g.na_block * g.loan_tile * GS_NPATH;
}

// Phase 0 work items of a thread block: na_block x (KD + J + JA).
GS_FN int gs_factor_items(const GsArgs& g) {
    return g.na_block * gs_factors_per_a(g);
}

// Work item r < KD + J + JA of value a: the discount factor of period r + 1,
// the rent index of period r - KD + 1 or the expected-rent factor of
// i = r - KD - J + 1 periods ahead, stored at discount[k - 1], rent[j - 1]
// and expect[i - 1].
GS_FN void gs_factor(const GsArgs& g, int a, int r, double* discount, double* rent,
                     double* expect) {
    if (r < g.KD) {
        const int k = r + 1;
        discount[k - 1] = pow(1.0 + g.a_discount[a], -((double)k * g.dt));
    } else if (!GS_RENT_SHAPE || r < g.KD + g.J) {  // a v2 build has no third kind
        const int j = r - g.KD + 1;
        rent[j - 1] = pow(1.0 - g.a_deflation[a], (double)j * g.dt);
    } else {
#if GS_RENT_SHAPE
        // NaN where a has the foresight appraisal, and then never read.
        const int i = r - g.KD - g.J + 1;
        expect[i - 1] = pow(1.0 - g.a_appraisal[a], (double)i * g.dt);
#endif
    }
}

// Phase 0 work item u: one (a value, period) discount factor, rent index or
// expected-rent factor.
GS_FN void gs_build_factors(const GsArgs& g, GsBlock blk, int u, double* table) {
    const int per_a = gs_factors_per_a(g);
    const int ia = u / per_a, r = u % per_a;
    const int a = blk.a0 + ia;
    if (ia >= g.na_block || a >= g.a_end) return;
    gs_factor(g, a, r, table + gs_discount_index(g, ia, 1), table + gs_rent_index(g, ia, 1),
              table + gs_expect_index(g, ia, 1));
}

// A loan's fleet, as steps 1-2 of docs/model.md read it.
struct GsFleet {
    int n_life, n_contract;
    double rent0, util, e, opex, n_gpus, contracted, contract_rent;
#if GS_RENT_SHAPE
    int shock_period;   // n_g
    double shock_keep;  // 1 - j e: what the generation shock leaves of the rent after n_g
#endif
};

// Loan l's fleet at value a.
GS_FN GsFleet gs_load_fleet(const GsArgs& g, int l, int a) {
    const double* lf = g.loan_f + (long)l * GS_NF;
    const int* li = g.loan_i + (long)l * GS_NI;
    GsFleet f;
    f.n_life = li[GS_NLIFE];
    f.n_contract = li[GS_NCONTRACT];
    f.rent0 = lf[GS_RENT];
    f.util = lf[GS_UTIL];
    f.e = lf[GS_POWER_COST];
    f.opex = lf[GS_OPEX];
    f.n_gpus = lf[GS_NGPUS];
    f.contracted = lf[GS_CONTRACTED];
    f.contract_rent = lf[GS_CONTRACT_RENT];
#if GS_RENT_SHAPE
    f.shock_period = (int)g.a_shock_period[a];
    f.shock_keep = 1.0 - g.a_shock[a] * lf[GS_EXPOSURE];
#endif
    return f;
}

// Whether value a has the market's appraisal (appraisal_deflation given).
GS_FN bool gs_market_appraised(const GsArgs& g, int a) {
#if GS_RENT_SHAPE
    return GS_JA(g) > 0 && !isnan(g.a_appraisal[a]);
#else
    return false;
#endif
}

// Market rent m_j = r0 P(t_j) (1 - d)^(t_j) (1 - j e 1{j > n_g}) of period j
// (docs/model.md, the rent index), rent_index[j - 1] = (1 - d)^(t_j).
GS_FN double gs_rent(const GsArgs& g, const GsFleet& f, int j, const double* rent_index) {
#if GS_RENT_SHAPE
    const double rent = f.rent0 * GS_LDG(g.rent_path + j) * rent_index[j - 1];
    return j > f.shock_period ? rent * f.shock_keep : rent;
#else
    return f.rent0 * rent_index[j - 1];
#endif
}

#if GS_RENT_SHAPE
// The market's appraisal G_k per GPU of loan l at value a at the end of
// period k (0 from k = n_L on), from the period's rent m_k extrapolated at
// d_a (expect[i - 1] = (1 - d_a)^(t_i)), with the option to retire the
// fleet: W_{n_L} = 0, W_{j-1} = max(0, w (pi~_j + W_j)) for j = n_L..k+1,
// G_k = W_k, w = (1 + y)^(-dt) = discount[0].  One work item per k: the
// recursion is n_L - k steps, so the items of a loan share its cost out.
GS_FN double gs_market_appraisal(const GsArgs& g, int l, int a, int k,
                                 const double* rent_index, const double* expect,
                                 const double* discount) {
    const GsFleet f = gs_load_fleet(g, l, a);
    const double rent_k = gs_rent(g, f, k, rent_index);
    const double w = discount[0];
    double value = 0.0;
    for (int j = f.n_life; j > k; --j) {
        const double expected = rent_k * expect[j - k - 1];
        const double income = g.hours * f.util * fmax(0.0, expected - f.e) - f.opex;
        value = fmax(0.0, w * (income + value));
    }
    return value;
}
#endif

// Net cash flow of the fleet R_j - P_j - F_j in period j at rent m_j = rent_j.
GS_FN double gs_fleet_net(const GsArgs& g, const GsFleet& f, int j, double rent_j) {
    const bool in_service = j <= f.n_life;
    const double util_k = rent_j > f.e ? f.util : 0.0;
    const double share = j <= f.n_contract ? f.contracted : 0.0;
    const double gpu_hours = in_service ? f.n_gpus * g.hours : 0.0;
    const double merchant = (1.0 - share) * util_k;
    const double revenue = gpu_hours * (share * f.contract_rent + merchant * rent_j);
    const double power = gpu_hours * (share + merchant) * f.e;
    const double fixed = in_service ? f.n_gpus * f.opex : 0.0;
    return revenue - power - fixed;
}

// Phase 1: the a-only tables of loan l at value a, from the rent index
// rent_index[j - 1] = (1 - d)^(t_j), j = 1..J, and the discount factors
// discount[k - 1]: net_k = R_k - P_k - F_k (steps 1-2 of docs/model.md) and,
// where a has the foresight appraisal, G_k = max(0, S_k),
// S_{j-1} = w (pi_j + S_j), for k = 1..n (the market's appraisal is built
// apart, gs_market_appraisal).  Returns the fleet's part of the cash-flow
// refinancing offer, sum_{m=1..n_refi} net_{n+m} (1+y)^(-t_m), added in the
// NumPy backend's order.
GS_FN double gs_build_loan_tables(const GsArgs& g, int l, int a, const double* rent_index,
                                  const double* discount, double* net, double* gval) {
    const int* li = g.loan_i + (long)l * GS_NI;
    const int n = li[GS_N];
    const GsFleet f = gs_load_fleet(g, l, a);
#if GS_RENT_SHAPE
    if (gs_market_appraised(g, a)) {
        for (int j = 1; j <= n; ++j)
            net[j - 1] = gs_fleet_net(g, f, j, gs_rent(g, f, j, rent_index));
    } else
#endif
    {
        const double w = pow(1.0 + g.a_discount[a], -g.dt);
        for (int k = 1; k <= n; ++k) gval[k - 1] = 0.0;
        const int last = n > f.n_life ? n : f.n_life;
        double s = 0.0;
        for (int j = last; j >= 1; --j) {
            const double rent_j = gs_rent(g, f, j, rent_index);
            if (j <= f.n_life) {
                const double income = g.hours * f.util * fmax(0.0, rent_j - f.e) - f.opex;
                s = w * (income + s);
            }
            if (j - 1 >= 1 && j - 1 <= n) gval[j - 2] = fmax(0.0, s);
            if (j <= n) net[j - 1] = gs_fleet_net(g, f, j, rent_j);
        }
    }
    double fleet_pv = 0.0;
    for (int m = 1; m <= li[GS_NREFI]; ++m)
        fleet_pv += gs_fleet_net(g, f, n + m, gs_rent(g, f, n + m, rent_index)) * discount[m - 1];
    return fleet_pv;
}

// Whether x / y < limit (y > 0), as the rounded quotient compares; the
// division is done only where x is within a relative 1e-12 of limit * y,
// far more than the rounding of the quotient and of the product, or where
// limit * y is so small (a zero limit, say) that its rounding could matter.
#define GS_TINY 1e-200
GS_FN bool gs_ratio_below(double x, double y, double limit) {
    const double bound = limit * y;
    const double margin = fabs(bound) * 1e-12;
    if (margin >= GS_TINY) {
        if (x < bound - margin) return true;
        if (x > bound + margin) return false;
    }
    return x / y < limit;
}

// Whether x / y > limit (x > 0, y >= 0; x / 0 is +inf), as the rounded
// quotient compares, with the division only near the boundary.
GS_FN bool gs_ratio_above(double x, double y, double limit) {
    const double bound = limit * y;
    const double margin = fabs(bound) * 1e-12;
    if (margin >= GS_TINY) {
        if (x > bound + margin) return true;
        if (x < bound - margin) return false;
    }
    return x / y > limit;
}

// One loan's fields that the period loop reads.
struct GsLoan {
    int n, n_life, n_refi;
    bool covenant, ltv_covenant, mining, book_basis;
    double cash0, cash_cap, balloon, mining_revenue, mining_cost, crypto0, pledged;
    double floor_dscr, max_ltv, refi, refi_min_dscr, cure;
    const double* ds_row;     // DS_k, k = 0..K
    const double* owed_row;   // O_k, k = 0..K
    const double* book_row;   // BV_k, k = 0..K
};

GS_FN GsLoan gs_load_loan(const GsArgs& g, int l) {
    const double* lf = g.loan_f + (long)l * GS_NF;
    const int* li = g.loan_i + (long)l * GS_NI;
    const int flags = GS_LDG(li + GS_FLAGS);
    GsLoan ln;
    ln.n = GS_LDG(li + GS_N);
    ln.n_life = GS_LDG(li + GS_NLIFE);
    ln.n_refi = GS_LDG(li + GS_NREFI);
    ln.covenant = flags & GS_HAS_COVENANT;
    ln.ltv_covenant = flags & GS_HAS_LTV;
    ln.mining = flags & GS_HAS_MINING;
    ln.book_basis = flags & GS_BOOK_BASIS;
    ln.cash0 = GS_LDG(lf + GS_CASH0);
    ln.cash_cap = GS_LDG(lf + GS_CASH_CAP);
    ln.balloon = GS_LDG(lf + GS_BALLOON);
    ln.mining_revenue = GS_LDG(lf + GS_MINING_REVENUE);
    ln.mining_cost = GS_LDG(lf + GS_MINING_COST);
    ln.crypto0 = GS_LDG(lf + GS_CRYPTO);
    ln.pledged = GS_LDG(lf + GS_PLEDGED_GPUS);
    ln.floor_dscr = GS_LDG(lf + GS_DSCR_FLOOR);
    ln.max_ltv = GS_LDG(lf + GS_MAX_LTV);
    ln.refi = GS_LDG(lf + GS_REFI);
    ln.refi_min_dscr = GS_LDG(lf + GS_REFI_MIN_DSCR);
    ln.cure = GS_LDG(lf + GS_CURE);
    ln.ds_row = g.debt_service + (long)l * g.K1;
    ln.owed_row = g.owed + (long)l * g.K1;
    ln.book_row = g.book_value + (long)l * g.K1;
    return ln;
}

// Crypto price index X_k = Q(t_k) (1 - c min(k, D) / D), Q = 1 outside a
// GS_CRYPTO_PATH build; x_done is the fall's factor once it is complete
// (k >= D), computed once by the caller.
GS_FN double gs_crypto_index(const GsArgs& g, int k, double c, double D, double x_done) {
    const double kd = (double)k;
    const double fall = kd < D ? 1.0 - c * kd / D : x_done;
#if GS_CRYPTO_PATH
    return GS_LDG(g.crypto_path + k) * fall;
#else
    return fall;
#endif
}

// Mining margin M_k = max(0, mining_revenue X_k - mining_cost) / f (step 3).
GS_FN double gs_mining(const GsArgs& g, const GsLoan& ln, double x_k) {
    return fmax(0.0, ln.mining_revenue * x_k - ln.mining_cost) * g.dt;
}

// The cash-flow refinancing offer of a loan maturing in n (step 8):
// K_n = max(0, sum_{m=1..n_refi} CFADS_{n+m} (1+y)^(-t_m)) / refi_min_dscr, the
// fleet's part (fleet_pv, from the tables) and the mining part discounted
// apart and added once, as the NumPy backend does; discount[m - 1] is the
// discount factor of period m.
GS_FN double gs_cash_flow_offer(const GsArgs& g, const GsLoan& ln, double fleet_pv,
                                const double* discount, double c, double D, double x_done) {
    double mining_pv = 0.0;
    if (ln.mining)
        for (int m = 1; m <= ln.n_refi; ++m)
            mining_pv +=
                gs_mining(g, ln, gs_crypto_index(g, ln.n + m, c, D, x_done)) * discount[m - 1];
    return fmax(0.0, fleet_pv + mining_pv) / ln.refi_min_dscr;
}

// A loan's running state: the cash account and the count of consecutive
// covenant breaches.
struct GsState {
    double cash, breaches;
};

// What one period of a loan decided: the trigger that fired (-1: none),
// whether it was a payment default, the cash account and the crypto price
// index of the period.
struct GsStep {
    int fired;
    bool payment;
    double cash, x;
};

// Steps 3-8 of docs/model.md for loan ln in period k of one path cell, given
// the fleet's net cash flow net[k - 1], appraisal gval[k - 1], the fleet's
// part of the refinancing offer and the discount factors discount[k - 1],
// the crypto fall c over D periods, and the market price index p_{k-1} (1
// without a market step).  Updates the state and
// lowers dscr_min to the period's DSCR where that is below it (the ratio is
// formed only where it can be a new minimum).
GS_FN GsStep gs_loan_period(const GsArgs& g, const GsLoan& ln, int k, const double* net,
                            const double* gval, double fleet_pv, const double* discount,
                            double c, double D, double x_done, double market, GsState& st,
                            double& dscr_min) {
    // 3. Mining at the crypto price index.
    const double x = gs_crypto_index(g, k, c, D, x_done);
    double cfads = net[k - 1];
    if (ln.mining) cfads = cfads + gs_mining(g, ln, x);
    // 4-5. DSCR and the cash account, capped at cash_cap.
    const double ds = GS_LDG(ln.ds_row + k);
    const double cash_k = fmin(ln.cash_cap, st.cash + cfads - ds);
    // The first trigger in GS_TRIGGER_* order names the default; once one
    // has fired, the later ones are not evaluated.
    const bool pay = cash_k < 0.0;
    int fired = pay ? GS_TRIGGER_PAYMENT : -1;
    if (ds > 0.0) {
        // The ratio is formed only where it can be a new minimum or
        // where it decides the covenant: same result, fewer divisions.
        const double bound = dscr_min * ds;
        bool below;
        if (cfads <= bound + fabs(bound) * 1e-12) {
            const double dscr = cfads / ds;
            dscr_min = fmin(dscr_min, dscr);
            below = dscr < ln.floor_dscr;
        } else {
            below = ln.covenant && gs_ratio_below(cfads, ds, ln.floor_dscr);
        }
        // 6. Covenant: cure_periods consecutive breaches.
        if (ln.covenant) {
            st.breaches = below ? st.breaches + 1.0 : 0.0;
            if (fired < 0 && st.breaches >= ln.cure) fired = GS_TRIGGER_COVENANT;
        }
    } else if (ln.covenant) {
        st.breaches = 0.0;
    }
    // 7-8. Collateral marked to the market at p_{k-1}: the LTV covenant (on
    // market or book value), and the balloon at maturity.
    const bool matures = k == ln.n && ln.balloon > 0.0;
    if (fired < 0 && (ln.ltv_covenant || matures)) {
        const double crypto = ln.crypto0 * x;
        const double collateral = ln.pledged * gval[k - 1] * market + crypto;
        if (ln.ltv_covenant) {
            // LTV = O / (V + C) or O / (BV + C), 0 when nothing is owed.
            const double owed = GS_LDG(ln.owed_row + k);
            const double basis =
                ln.book_basis ? GS_LDG(ln.book_row + k) + crypto : collateral;
            if (owed > 0.0 ? gs_ratio_above(owed, basis, ln.max_ltv) : 0.0 > ln.max_ltv)
                fired = GS_TRIGGER_LTV;
        }
        if (fired < 0 && matures) {
            // The better of the collateral and the cash-flow offer.
            double offer = ln.refi * collateral;
            if (ln.n_refi > 0)
                offer = fmax(offer, gs_cash_flow_offer(g, ln, fleet_pv, discount, c, D, x_done));
            if (ln.balloon > fmax(cash_k, 0.0) + offer) fired = GS_TRIGGER_MATURITY;
        }
    }
    st.cash = cash_k;
    GsStep step;
    step.fired = fired;
    step.payment = pay;
    step.cash = cash_k;
    step.x = x;
    return step;
}

// Where a loan's path ends: the default period tau (0: none), the trigger
// that names the default, whether it is a payment default, the cash and
// crypto price index at tau.
struct GsPath {
    int tau, trigger;
    bool payment;
    double cash_tau, price_tau;
};

// One loan in one path cell without a market step: its periods up to
// default or maturity (gs_loan_period with p = 1).
GS_FN GsPath gs_loan_path(const GsArgs& g, const GsLoan& ln, const double* net,
                          const double* gval, double fleet_pv, const double* discount,
                          double c, double D, double x_done, double& dscr_min) {
    GsState st;
    st.cash = ln.cash0;
    st.breaches = 0.0;
    GsPath path;
    path.tau = 0;
    path.trigger = -1;
    path.payment = false;
    path.cash_tau = 0.0;
    path.price_tau = 1.0;
    for (int k = 1; k <= ln.n; ++k) {
        const GsStep step = gs_loan_period(g, ln, k, net, gval, fleet_pv, discount, c, D, x_done,
                                           1.0, st, dscr_min);
        if (step.fired >= 0) {
            path.tau = k;
            path.trigger = step.fired;
            path.payment = step.payment;
            path.cash_tau = step.cash;
            path.price_tau = step.x;
            break;
        }
    }
    return path;
}

// The path of the tile's b-free loan lt at the block's a value ia and its
// lowest DSCR, the same in every path cell of the a value, from its tables.
GS_FN void gs_build_free_path(const GsArgs& g, int l0, int ia, int lt, double* table) {
    const int l = l0 + lt;
    if (!(GS_LDG(g.loan_i + (long)l * GS_NI + GS_FLAGS) & GS_B_FREE)) return;
    double* out = table + gs_path_index(g, ia, lt);
    // No mining and no crypto: the price index enters only as 0 * X_k.
    double dscr_min = GS_INF;
    const GsPath path = gs_loan_path(
        g, gs_load_loan(g, l), table + gs_table_index(g, ia, lt, 1),
        table + gs_table_size(g) + gs_table_index(g, ia, lt, 1), out[GS_PATH_FLEET_PV],
        table + gs_discount_index(g, ia, 1), 0.0, 1.0, 1.0, dscr_min);
    out[GS_PATH_TAU] = (double)path.tau;
    out[GS_PATH_PAYMENT] = path.payment ? 1.0 : 0.0;
    out[GS_PATH_CASH] = path.cash_tau;
    out[GS_PATH_DSCR_MIN] = dscr_min;
    out[GS_PATH_TRIGGER] = (double)path.trigger;
}

// Phase 1 work item u of a thread block: one (a value, loan) pair of the tile.
// The tables of the pair, and for a b-free loan its path (gs_build_free_path;
// where a has the market's appraisal, after phase 1b has built G_k).
GS_FN void gs_build_tables(const GsArgs& g, GsBlock blk, int l0, int tile_len, int u,
                           double* table) {
    const int ia = u / tile_len, lt = u % tile_len;
    const int a = blk.a0 + ia;
    if (ia >= g.na_block || a >= g.a_end) return;
    table[gs_path_index(g, ia, lt) + GS_PATH_FLEET_PV] = gs_build_loan_tables(
        g, l0 + lt, a, table + gs_rent_index(g, ia, 1), table + gs_discount_index(g, ia, 1),
        table + gs_table_index(g, ia, lt, 1),
        table + gs_table_size(g) + gs_table_index(g, ia, lt, 1));
    if (!gs_market_appraised(g, a)) gs_build_free_path(g, l0, ia, lt, table);
}

#if GS_RENT_SHAPE
// Phase 1b (a launch with a market appraisal, JA > 0): work item u < na_block
// x tile_len x K, one (a value, loan, period k) triple: the market's G_k of
// the loan, for k = 1..n.
GS_FN void gs_build_market_appraisal(const GsArgs& g, GsBlock blk, int l0, int tile_len, int u,
                                     double* table) {
    const int K = g.K1 - 1;
    const int k = u % K + 1, rest = u / K;
    const int ia = rest / tile_len, lt = rest % tile_len;
    const int a = blk.a0 + ia, l = l0 + lt;
    if (ia >= g.na_block || a >= g.a_end || !gs_market_appraised(g, a)) return;
    if (k > GS_LDG(g.loan_i + (long)l * GS_NI + GS_N)) return;
    table[gs_table_size(g) + gs_table_index(g, ia, lt, k)] =
        gs_market_appraisal(g, l, a, k, table + gs_rent_index(g, ia, 1),
                            table + gs_expect_index(g, ia, 1), table + gs_discount_index(g, ia, 1));
}

// Phase 1c, after phase 1b: work item u < na_block x tile_len, the b-free
// paths of the a values with the market's appraisal.
GS_FN void gs_build_market_free_path(const GsArgs& g, GsBlock blk, int l0, int tile_len, int u,
                                     double* table) {
    const int ia = u / tile_len, lt = u % tile_len;
    const int a = blk.a0 + ia;
    if (ia >= g.na_block || a >= g.a_end || !gs_market_appraised(g, a)) return;
    gs_build_free_path(g, l0, ia, lt, table);
}
#endif

// What a thread carries across loans: its path cell's statistics and the
// sums of its recovery cells (registers).
struct GsCell {
    double dscr_min, first_default, defaults, defaulted_principal, ead_sum, price_min;
    double by_trigger[GS_NTRIGGER];   // defaulted principal by trigger
    double loss[GS_QT], loss_pv[GS_QT], recovered[GS_QT];
#if GS_NSEG_REG > 0
    double segment[GS_QT][GS_NSEG_REG];
#endif
};

GS_FN void gs_cell_start(const GsArgs& g, GsBlock blk, int a, int b, GsCell& cell) {
    cell.dscr_min = GS_INF;
    cell.first_default = GS_INF;
    cell.defaults = 0.0;
    cell.defaulted_principal = 0.0;
    cell.ead_sum = 0.0;
    cell.price_min = 1.0;
    GS_UNROLL
    for (int t = 0; t < GS_NTRIGGER; ++t) cell.by_trigger[t] = 0.0;
    GS_UNROLL
    for (int i = 0; i < GS_QT; ++i) {
        cell.loss[i] = 0.0;
        cell.loss_pv[i] = 0.0;
        cell.recovered[i] = 0.0;
#if GS_NSEG_REG > 0
        GS_UNROLL
        for (int s = 0; s < GS_NSEG_REG; ++s) cell.segment[i][s] = 0.0;
#else
        const int q = blk.q0 + i;
        if (q < g.Q)
            for (int s = 0; s < g.n_segments; ++s)
                g.out_q[gs_q_index(g, GS_QV_SEG + s, a, q, b)] = 0.0;
#endif
    }
}

// The recovery of one defaulted loan (EAD, collateral, cash at default) in
// the recovery cells q0 .. q0 + GS_QT - 1, added to the cell's sums.
GS_FN long gs_loan_q_index(const GsArgs& g, int l, int a, int q, int b) {
    return (((long)l * g.A + a) * g.Q + q) * g.B + b;
}

GS_FN long gs_loan_p_index(const GsArgs& g, int l, int a, int b) {
    return ((long)l * g.A + a) * g.B + b;
}

// Loan l's default time t_tau in path cell (a, b), in a per-loan build (the
// array starts as NaN: no default).
GS_FN void gs_write_loan_years(const GsArgs& g, int l, int a, int b, double t_tau) {
#if GS_PER_LOAN
    g.out_loan_years[gs_loan_p_index(g, l, a, b)] = t_tau;
#endif
}

GS_FN void gs_add_recovery(const GsArgs& g, int l, int q0, int a, int b, int seg, double ead,
                           double gpu_k, double crypto_k, double cash_left, double discount,
                           GsCell& cell) {
    GS_UNROLL
    for (int i = 0; i < GS_QT; ++i) {
        const int q = q0 + i;
        if (q >= g.Q) break;
        const double proceeds = gpu_k * g.q_keep[q] + crypto_k * g.q_keep_crypto[q]
                                + cash_left;
        const double recovery = fmin(ead, proceeds);
        const double loss = ead - recovery;
        cell.loss[i] += loss;
        cell.loss_pv[i] += loss * discount;
        cell.recovered[i] += recovery;
#if GS_PER_LOAN
        // Per-loan losses (the array starts as 0: no default).
        g.out_loan_loss[gs_loan_q_index(g, l, a, q, b)] = loss;
#endif
#if GS_NSEG_REG > 0
        GS_UNROLL
        for (int s = 0; s < GS_NSEG_REG; ++s)
            if (s == seg) cell.segment[i][s] += loss;
#else
        g.out_q[gs_q_index(g, GS_QV_SEG + seg, a, q, b)] += loss;
#endif
    }
}

// Phase 2: the loans l0 .. l0 + tile_len - 1 in path cell (a, b), steps 3-8
// of docs/model.md (a b-free loan's path is read from phase 1), then the
// recovery of each defaulted loan for every q.
GS_FN void gs_cell_loans(const GsArgs& g, GsBlock blk, int l0, int tile_len, int a, int b,
                         const double* table, GsCell& cell) {
    const int ia = a - blk.a0;
    const double c = g.b_crypto[b], D = g.b_periods[b];
    // X_k once the fall is complete (k >= D): the same expression, hoisted.
    const double price_done = gs_opaque(1.0 - c * D / D);
    for (int lt = 0; lt < tile_len; ++lt) {
        const int l = l0 + lt;
        const double* lf = g.loan_f + (long)l * GS_NF;
        const int* li = g.loan_i + (long)l * GS_NI;
        const double* gval = table + gs_table_size(g) + gs_table_index(g, ia, lt, 1);
        GsPath path;
        if (GS_LDG(li + GS_FLAGS) & GS_B_FREE) {
            const double* shared_path = table + gs_path_index(g, ia, lt);
            path.tau = (int)shared_path[GS_PATH_TAU];
            path.trigger = (int)shared_path[GS_PATH_TRIGGER];
            path.payment = shared_path[GS_PATH_PAYMENT] != 0.0;
            path.cash_tau = shared_path[GS_PATH_CASH];
            path.price_tau = 1.0;  // enters only as 0 * X_tau
            cell.dscr_min = fmin(cell.dscr_min, shared_path[GS_PATH_DSCR_MIN]);
        } else {
            const double* net = table + gs_table_index(g, ia, lt, 1);
            path = gs_loan_path(g, gs_load_loan(g, l), net, gval,
                                table[gs_path_index(g, ia, lt) + GS_PATH_FLEET_PV],
                                table + gs_discount_index(g, ia, 1), c, D, price_done,
                                cell.dscr_min);
        }
        const int tau = path.tau;
        if (tau == 0) {
#if GS_RECORDS
            g.records[gs_rec_index(g, GS_REC_EAD, l, a, b)] = 0.0;
#endif
            continue;
        }

        // Default in period tau: exposure, collateral and recovery.
        const double t_tau = (double)tau * g.dt;
        const double ead = path.payment ? GS_LDG(g.balance + (long)l * g.K1 + tau - 1)
                                        : GS_LDG(g.owed + (long)l * g.K1 + tau);
        const double gpu_k = GS_LDG(lf + GS_PLEDGED_GPUS) * gval[tau - 1];
        const double crypto_k = GS_LDG(lf + GS_CRYPTO) * path.price_tau;
        const double cash_left = fmax(path.cash_tau, 0.0);
        const double discount = table[gs_discount_index(g, ia, tau)];
        const double principal = GS_LDG(lf + GS_PRINCIPAL);
        cell.defaults += 1.0;
        cell.defaulted_principal += principal;
        GS_UNROLL
        for (int t = 0; t < GS_NTRIGGER; ++t)
            if (t == path.trigger) cell.by_trigger[t] += principal;
        cell.first_default = fmin(cell.first_default, t_tau);
        cell.ead_sum += ead;
        if (blk.q0 == 0) gs_write_loan_years(g, l, a, b, t_tau);
#if GS_RECORDS
        g.records[gs_rec_index(g, GS_REC_EAD, l, a, b)] = ead;
        g.records[gs_rec_index(g, GS_REC_GPU, l, a, b)] = gpu_k;
        g.records[gs_rec_index(g, GS_REC_CRYPTO, l, a, b)] = crypto_k;
        g.records[gs_rec_index(g, GS_REC_CASH, l, a, b)] = cash_left;
        g.records[gs_rec_index(g, GS_REC_DISCOUNT, l, a, b)] = discount;
#else
        gs_add_recovery(g, l, blk.q0, a, b, li[GS_SEGMENT], ead, gpu_k, crypto_k, cash_left,
                        discount, cell);
#endif
    }
}

// The outputs of recovery cells q0 .. q0 + GS_QT - 1 from the cell's sums.
GS_FN void gs_write_recovery_cells(const GsArgs& g, int q0, int a, int b, double ead_sum,
                                   const GsCell& cell) {
    GS_UNROLL
    for (int i = 0; i < GS_QT; ++i) {
        const int q = q0 + i;
        if (q >= g.Q) break;
        g.out_q[gs_q_index(g, GS_QV_LOSS, a, q, b)] = cell.loss[i];
        g.out_q[gs_q_index(g, GS_QV_LOSS_PV, a, q, b)] = cell.loss_pv[i];
        g.out_q[gs_q_index(g, GS_QV_LOSS_RATE, a, q, b)] = cell.loss[i] / g.total_principal;
        g.out_q[gs_q_index(g, GS_QV_RECOVERY_RATE, a, q, b)] =
            ead_sum > 0.0 ? cell.recovered[i] / ead_sum : GS_NAN;
        g.out_q[gs_q_index(g, GS_QV_BREAKEVEN_SPREAD_BPS, a, q, b)] =
            1e4 * cell.loss_pv[i] / g.principal_wal;
#if GS_NSEG_REG > 0
        GS_UNROLL
        for (int s = 0; s < GS_NSEG_REG; ++s)
            g.out_q[gs_q_index(g, GS_QV_SEG + s, a, q, b)] = cell.segment[i][s];
#endif
    }
}

// The outputs of path cell (a, b) from its sums.
GS_FN void gs_write_path_cell(const GsArgs& g, int a, int b, const GsCell& cell) {
    {
        g.out_p[gs_p_index(g, GS_PV_DEFAULTS, a, b)] = cell.defaults;
        g.out_p[gs_p_index(g, GS_PV_DEFAULT_RATE, a, b)] =
            cell.defaulted_principal / g.total_principal;
        g.out_p[gs_p_index(g, GS_PV_FIRST_DEFAULT_YEARS, a, b)] =
            cell.first_default == GS_INF ? GS_NAN : cell.first_default;
        g.out_p[gs_p_index(g, GS_PV_MIN_DSCR, a, b)] =
            cell.dscr_min == GS_INF ? GS_NAN : cell.dscr_min;
        g.out_p[gs_p_index(g, GS_PV_EAD_SUM, a, b)] = cell.ead_sum;
        g.out_p[gs_p_index(g, GS_PV_MARKET_PRICE_MIN, a, b)] = cell.price_min;
        GS_UNROLL
        for (int t = 0; t < GS_NTRIGGER; ++t)
            g.out_p[gs_p_index(g, GS_PV_TRIGGER + t, a, b)] =
                cell.by_trigger[t] / g.total_principal;
    }
}

// Phase 3: the cell's outputs from its sums.  The values that do not depend
// on q are written by the threads of the first recovery tile only.
GS_FN void gs_cell_finish(const GsArgs& g, GsBlock blk, int a, int b, const GsCell& cell) {
    if (blk.q0 == 0) gs_write_path_cell(g, a, b, cell);
#if !GS_RECORDS
    gs_write_recovery_cells(g, blk.q0, a, b, cell.ead_sum, cell);
#endif
}

// Two-stage mode, second kernel.  A thread block takes rb mining values b
// (its lanes) of one value of a and rq tiles of GS_QT recovery cells:
// thread t has b = b0 + t % rb and the recovery cells from
// (qt0 + t / rb) * GS_QT.  The block copies the default records of its path
// cells into shared memory, rec_tile loans at a time, in coalesced loads that
// every recovery tile then reads; all fields are copied, whether or not the
// loan defaulted (those of a loan without default are not used).  Each
// thread adds the loans in canonical order.
struct GsRecoverBlock {
    int a, b0, qt0;
};

GS_FN int gs_q_tiles(const GsArgs& g) {
    return (g.Q + GS_QT - 1) / GS_QT;
}

GS_FN long gs_recover_blocks(const GsArgs& g) {
    const int nbt = (g.B + g.rb - 1) / g.rb;
    const int nqt = (gs_q_tiles(g) + g.rq - 1) / g.rq;
    return (long)(g.a_end - g.a_begin) * nbt * nqt;
}

// The recovery tiles of one path-cell range are neighbours in the launch, so
// that they copy the same records while these are in the L2 cache.
GS_FN GsRecoverBlock gs_recover_block(const GsArgs& g, long block_index) {
    const int nbt = (g.B + g.rb - 1) / g.rb;
    const int nqt = (gs_q_tiles(g) + g.rq - 1) / g.rq;
    GsRecoverBlock r;
    r.qt0 = (int)(block_index % nqt) * g.rq;
    const long rest = block_index / nqt;
    r.b0 = (int)(rest % nbt) * g.rb;
    r.a = g.a_begin + (int)(rest / nbt);
    return r;
}

GS_FN long gs_recover_shared_doubles(const GsArgs& g) {
    return (long)GS_NREC * g.rec_tile * g.rb;
}

GS_FN int gs_rec_shared_index(const GsArgs& g, int field, int lt, int lane) {
    return (field * g.rec_tile + lt) * g.rb + lane;
}

// Whether thread t of the block has recovery cells.
GS_FN bool gs_recover_mine(const GsArgs& g, GsRecoverBlock r, int t) {
    const int qt = r.qt0 + t / g.rb;
    return t < g.rb * g.rq && r.b0 + t % g.rb < g.B && qt < gs_q_tiles(g);
}

// Copy work item u: one field of one loan of the tile for one lane,
// u < GS_NREC * tile_len * rb (lanes fastest: coalesced).
GS_FN void gs_copy_record(const GsArgs& g, GsRecoverBlock r, int l0, int tile_len, int u,
                          double* shared) {
    const int lane = u % g.rb, rest = u / g.rb;
    const int lt = rest % tile_len, field = rest / tile_len;
    const int b = r.b0 + lane;
    if (b >= g.B) return;
    shared[gs_rec_shared_index(g, field, lt, lane)] =
        g.records[gs_rec_index(g, field, l0 + lt, r.a, b)];
}

GS_FN void gs_recover_start(const GsArgs& g, GsRecoverBlock r, int t, GsCell& cell) {
    GsBlock blk;
    blk.a0 = r.a;
    blk.b0 = r.b0 + t % g.rb;
    blk.q0 = (r.qt0 + t / g.rb) * GS_QT;
    gs_cell_start(g, blk, r.a, blk.b0, cell);
}

// Thread t's recovery cells summed over the tile's loans l0 .. l0 + tile_len - 1.
GS_FN void gs_recover_tile(const GsArgs& g, GsRecoverBlock r, int l0, int tile_len, int t,
                           const double* shared, GsCell& cell) {
    const int lane = t % g.rb, b = r.b0 + lane;
    const int q0 = (r.qt0 + t / g.rb) * GS_QT;
    for (int lt = 0; lt < tile_len; ++lt) {
        const double ead = shared[gs_rec_shared_index(g, GS_REC_EAD, lt, lane)];
        if (ead == 0.0) continue;  // no default, or nothing exposed: adds 0
        gs_add_recovery(g, l0 + lt, q0, r.a, b,
                        GS_LDG(g.loan_i + (long)(l0 + lt) * GS_NI + GS_SEGMENT),
                        ead, shared[gs_rec_shared_index(g, GS_REC_GPU, lt, lane)],
                        shared[gs_rec_shared_index(g, GS_REC_CRYPTO, lt, lane)],
                        shared[gs_rec_shared_index(g, GS_REC_CASH, lt, lane)],
                        shared[gs_rec_shared_index(g, GS_REC_DISCOUNT, lt, lane)], cell);
    }
}

GS_FN void gs_recover_finish(const GsArgs& g, GsRecoverBlock r, int t, const GsCell& cell) {
    const int b = r.b0 + t % g.rb;
    gs_write_recovery_cells(g, (r.qt0 + t / g.rb) * GS_QT, r.a, b,
                            g.out_p[gs_p_index(g, GS_PV_EAD_SUM, r.a, b)], cell);
}

// ---------------------------------------------------------------------------
// The market step (docs/model.md): period-outer.  With a secondary market of
// finite depth a loan's path depends on every other loan's defaults, so the
// loans of a path cell are stepped together, period by period: each loan's
// triggers at p_{k-1}, then the GPUs of the loans that default in k are sold
// (the overhang Q_k and price index p_k), then those defaults are closed at
// p_k.  gs_tables first builds the d-only tables of every loan in global
// memory (one thread block per a value); gs_market then gives one thread
// to each path cell, which keeps its loans' state in the records
// (GS_NSTATE rows per loan and path cell) and leaves there the default
// records the recovery kernel sums for every recovery cell.

// The tables of loan l at value a: net cash flow (K periods), G_k (K), then
// the fleet's part of the refinancing offer.
#define GS_MARKET_TABLE(g) (2 * ((g).K1 - 1) + 1)
GS_FN long gs_market_table(const GsArgs& g, int a, int l) {
    return ((long)(a - g.rec_begin) * g.n_loans + l) * GS_MARKET_TABLE(g);
}

// The discount factors (1 + y)^(-t_k), k = 1..KD, at value a.
GS_FN long gs_market_discount(const GsArgs& g, int a) {
    return (long)(g.rec_end - g.rec_begin) * g.n_loans * GS_MARKET_TABLE(g)
           + (long)(a - g.rec_begin) * g.KD;
}

// Doubles of the tables of a launch's a range.
GS_FN long gs_market_table_doubles(const GsArgs& g) {
    return (long)(g.rec_end - g.rec_begin) * ((long)g.n_loans * GS_MARKET_TABLE(g) + g.KD);
}

// Doubles of the tables kernel's shared memory: the rent index and the
// expected-rent factors of its value of a.
GS_FN long gs_tables_shared_doubles(const GsArgs& g) {
    return (long)g.J + GS_JA(g);
}

// Tables kernel, phase 0 work item r < KD + J + JA of a = a_begin + block_index:
// a discount factor (to global memory), the rent index (to rent[0..J)) or
// an expected-rent factor (to rent[J..J + JA)).
GS_FN void gs_market_factor(const GsArgs& g, int block_index, int r, double* rent) {
    const int a = g.a_begin + block_index;
    gs_factor(g, a, r, g.tables + gs_market_discount(g, a), rent, rent + g.J);
}

// Tables kernel, phase 1: loan l's tables at a = a_begin + block_index.
GS_FN void gs_market_loan_tables(const GsArgs& g, int block_index, int l, const double* rent) {
    const int a = g.a_begin + block_index;
    double* net = g.tables + gs_market_table(g, a, l);
    const int K = g.K1 - 1;
    net[2 * K] =
        gs_build_loan_tables(g, l, a, rent, g.tables + gs_market_discount(g, a), net, net + K);
}

#if GS_RENT_SHAPE
// Tables kernel, phase 1b (JA > 0): work item u < L x K, the market's G_k of
// loan u / K at a = a_begin + block_index, k = u % K + 1 <= n.
GS_FN void gs_market_loan_appraisal(const GsArgs& g, int block_index, int u, const double* rent) {
    const int a = g.a_begin + block_index;
    const int K = g.K1 - 1;
    const int l = u / K, k = u % K + 1;
    if (!gs_market_appraised(g, a) || k > GS_LDG(g.loan_i + (long)l * GS_NI + GS_N)) return;
    g.tables[gs_market_table(g, a, l) + K + (k - 1)] = gs_market_appraisal(
        g, l, a, k, rent, rent + g.J, g.tables + gs_market_discount(g, a));
}
#endif

// Thread u of the market kernel: its path cell (a, b), and whether it has one.
GS_FN bool gs_market_cell(const GsArgs& g, long u, int& a, int& b) {
    if (u >= (long)(g.a_end - g.a_begin) * g.B) return false;
    a = g.a_begin + (int)(u / g.B);
    b = (int)(u % g.B);
    return true;
}

// Every loan of path cell (a, b) through the horizon with the market step.
GS_FN void gs_market_path(const GsArgs& g, int a, int b) {
    const double c = g.b_crypto[b], D = g.b_periods[b];
    const double x_done = gs_opaque(1.0 - c * D / D);
    const double depth = g.b_depth[b], book_share = g.b_book_share[b];
    const double decay = pow(2.0, -g.dt / g.b_half_life[b]);  // 1 when T is infinite
    const double* discount = g.tables + gs_market_discount(g, a);
    const int K = g.K1 - 1;
    // The cell's records, gs_rec_index's layout with the cell's offset hoisted.
    const long rec_cells = (long)(g.rec_end - g.rec_begin) * g.B;
    const long rec_field = (long)g.n_loans * rec_cells;
    double* const rec = g.records + gs_rec_index(g, 0, 0, a, b);
#define GS_REC(field, l) rec[(long)(field) * rec_field + (long)(l) * rec_cells]
    // A loan's other rows are written at its default, and read only then
    // (an EAD of 0 tells the recovery kernel there is nothing to recover).
    for (int l = 0; l < g.n_loans; ++l) {
        GS_REC(GS_REC_EAD, l) = 0.0;
        GS_REC(GS_REC_CASH, l) = GS_LDG(g.loan_f + (long)l * GS_NF + GS_CASH0);
        GS_REC(GS_REC_STATUS, l) = 0.0;
    }
    GsCell cell;
    cell.dscr_min = GS_INF;
    double overhang = 0.0, price = 1.0;  // Q_{k-1} [GPU], p_{k-1}
    cell.price_min = 1.0;
    for (int k = 1; k <= K; ++k) {
        double sold = 0.0;  // S_k [GPU]
        bool any = false;
        // The loans still running in k come first: canonical order sorts
        // them by maturity, longest first (gridstress/portfolio.py).
        for (int l = 0; l < g.n_loans && GS_LDG(g.loan_i + (long)l * GS_NI + GS_N) >= k; ++l) {
            const double status = GS_REC(GS_REC_STATUS, l);
            if (status < 0.0) continue;  // defaulted
            const GsLoan ln = gs_load_loan(g, l);
            const double* net = g.tables + gs_market_table(g, a, l);
            const double* gval = net + K;
            GsState st;
            st.cash = GS_REC(GS_REC_CASH, l);
            st.breaches = status;
            const GsStep step = gs_loan_period(g, ln, k, net, gval, net[2 * K], discount, c, D,
                                               x_done, price, st, cell.dscr_min);
            if (step.fired < 0) {
                GS_REC(GS_REC_CASH, l) = st.cash;
                if (ln.covenant) GS_REC(GS_REC_STATUS, l) = st.breaches;  // else still 0
                continue;
            }
            // Default in k: the record, with the fleet's fair value V*_k
            // (marked to p_k below, once the period's sales are known).
            GS_REC(GS_REC_STATUS, l) = -(double)k;
            GS_REC(GS_REC_TRIGGER, l) = (double)step.fired;
            GS_REC(GS_REC_EAD, l) = step.payment ? GS_LDG(g.balance + (long)l * g.K1 + k - 1)
                                                 : GS_LDG(ln.owed_row + k);
            GS_REC(GS_REC_GPU, l) = ln.pledged * gval[k - 1];
            GS_REC(GS_REC_CRYPTO, l) = ln.crypto0 * step.x;
            GS_REC(GS_REC_CASH, l) = fmax(step.cash, 0.0);
            GS_REC(GS_REC_DISCOUNT, l) = discount[k - 1];
            if (k <= ln.n_life) sold += ln.pledged;  // in-service GPUs only
            any = true;
        }
        // The market step: Q_k = Q_{k-1} 2^(-dt/T) + S_k / theta, p_k = 2^(-Q_k / W).
        overhang = overhang * decay;
        overhang = overhang + sold / book_share;
        price = pow(2.0, -overhang / depth);
        cell.price_min = fmin(cell.price_min, price);
        if (!any) continue;
        // The fleets of the defaults of k are sold at p_k.
        for (int l = 0; l < g.n_loans && GS_LDG(g.loan_i + (long)l * GS_NI + GS_N) >= k; ++l)
            if (GS_REC(GS_REC_STATUS, l) == -(double)k)
                GS_REC(GS_REC_GPU, l) = GS_REC(GS_REC_GPU, l) * price;
    }
    // The cell's statistics, adding the loans in canonical order (the
    // recovery sums of GsCell stay unused here: gs_recover adds them).
    cell.first_default = GS_INF;
    cell.defaults = 0.0;
    cell.defaulted_principal = 0.0;
    cell.ead_sum = 0.0;
    GS_UNROLL
    for (int t = 0; t < GS_NTRIGGER; ++t) cell.by_trigger[t] = 0.0;
    for (int l = 0; l < g.n_loans; ++l) {
        const double status = GS_REC(GS_REC_STATUS, l);
        if (status >= 0.0) continue;  // no default
        const double t_tau = -status * g.dt;
        const double principal = GS_LDG(g.loan_f + (long)l * GS_NF + GS_PRINCIPAL);
        const int trigger = (int)GS_REC(GS_REC_TRIGGER, l);
        cell.defaults += 1.0;
        cell.defaulted_principal += principal;
        GS_UNROLL
        for (int t = 0; t < GS_NTRIGGER; ++t)
            if (t == trigger) cell.by_trigger[t] += principal;
        cell.first_default = fmin(cell.first_default, t_tau);
        cell.ead_sum += GS_REC(GS_REC_EAD, l);
        gs_write_loan_years(g, l, a, b, t_tau);
    }
#undef GS_REC
    gs_write_path_cell(g, a, b, cell);
}

#endif  // GRIDSTRESS_CUH
