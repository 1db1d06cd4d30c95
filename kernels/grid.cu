// gridstress model v3 on NVIDIA GPUs: fused passes over blocks of cells.
//
// gs_grid evaluates path cells a_begin <= a < a_end, 0 <= b < B and every
// recovery cell q.  Each thread block covers na_block x nb_block path cells
// (thread t: a = a0 + t / nb_block, b = b0 + t % nb_block).  The block first
// builds its loan-independent factors in shared memory (na_block x KD discount
// factors, na_block x J rent indices, na_block x JA expected-rent factors),
// then walks the portfolio in tiles of
// loan_tile loans: it builds the tile's a-only tables in shared memory
// (2 * na_block * loan_tile * K doubles), then each thread runs the tile's
// loans through its path cell.  Only the
// per-cell results are written to global memory.  See gridstress.cuh for
// the arithmetic and gridstress/kernels/ for the launch.
#include "gridstress.cuh"

extern "C" __global__ void gs_grid(const GsArgs* __restrict__ args) {
    extern __shared__ double table[];
    const GsArgs& g = *args;
    const int t = threadIdx.x;
    const GsBlock blk = gs_block(g, blockIdx.x);
    int a, b;
    const bool mine = gs_path_cell(g, blk, t, a, b);

    GsCell cell;
    if (mine) gs_cell_start(g, blk, a, b, cell);
    for (int u = t; u < gs_factor_items(g); u += blockDim.x)
        gs_build_factors(g, blk, u, table);
    for (int l0 = 0; l0 < g.n_loans; l0 += g.loan_tile) {
        const int tile_len = min(g.loan_tile, g.n_loans - l0);
        __syncthreads();  // the previous tile's tables are no longer read
        for (int u = t; u < g.na_block * tile_len; u += blockDim.x)
            gs_build_tables(g, blk, l0, tile_len, u, table);
#if GS_RENT_SHAPE
        if (g.JA > 0) {  // the market's appraisal: one item per (a, loan, k), then b-free paths
            for (int u = t; u < g.na_block * tile_len * (g.K1 - 1); u += blockDim.x)
                gs_build_market_appraisal(g, blk, l0, tile_len, u, table);
            __syncthreads();
            for (int u = t; u < g.na_block * tile_len; u += blockDim.x)
                gs_build_market_free_path(g, blk, l0, tile_len, u, table);
        }
#endif
        __syncthreads();
        if (mine) gs_cell_loans(g, blk, l0, tile_len, a, b, table, cell);
    }
    if (mine) gs_cell_finish(g, blk, a, b, cell);
}

// Two-stage mode (many recovery cells): gs_grid built with GS_RECORDS=1
// writes each loan's default record per path cell; this kernel then sums the
// records for rb x rq recovery tiles per thread block, copying them into
// shared memory (dynamic: GS_NREC * rec_tile * rb doubles) rec_tile loans
// at a time.
extern "C" __global__ void gs_recover(const GsArgs* __restrict__ args) {
    extern __shared__ double shared[];
    const GsArgs& g = *args;
    const int t = threadIdx.x;
    const GsRecoverBlock r = gs_recover_block(g, blockIdx.x);
    const bool mine = gs_recover_mine(g, r, t);
    GsCell cell;
    if (mine) gs_recover_start(g, r, t, cell);
    for (int l0 = 0; l0 < g.n_loans; l0 += g.rec_tile) {
        const int tile_len = min(g.rec_tile, g.n_loans - l0);
        __syncthreads();  // the previous tile's records are no longer read
        for (int u = t; u < GS_NREC * tile_len * g.rb; u += blockDim.x)
            gs_copy_record(g, r, l0, tile_len, u, shared);
        __syncthreads();
        if (mine) gs_recover_tile(g, r, l0, tile_len, t, shared, cell);
    }
    if (mine) gs_recover_finish(g, r, t, cell);
}

// The market step (period-outer), first kernel: the a-only tables of every
// loan for a = a_begin + blockIdx.x, in global memory; the block's rent index
// (1 - d)^(t_j) and expected-rent factors in shared memory (dynamic:
// gs_tables_shared_doubles).
extern "C" __global__ void gs_tables(const GsArgs* __restrict__ args) {
    extern __shared__ double rent[];
    const GsArgs& g = *args;
    for (int r = threadIdx.x; r < gs_factors_per_a(g); r += blockDim.x)
        gs_market_factor(g, blockIdx.x, r, rent);
    __syncthreads();
    for (int l = threadIdx.x; l < g.n_loans; l += blockDim.x)
        gs_market_loan_tables(g, blockIdx.x, l, rent);
#if GS_RENT_SHAPE
    if (g.JA > 0)  // the market's appraisal: one item per (loan, k)
        for (int u = threadIdx.x; u < g.n_loans * (g.K1 - 1); u += blockDim.x)
            gs_market_loan_appraisal(g, blockIdx.x, u, rent);
#endif
}

// The market step, second kernel: one thread per path cell a_begin <= a < a_end,
// 0 <= b < B, every loan stepped period by period with the cell's secondary
// market; leaves the default records that gs_recover sums.
extern "C" __global__ void gs_market(const GsArgs* __restrict__ args) {
    const GsArgs& g = *args;
    int a, b;
    if (gs_market_cell(g, (long)blockIdx.x * blockDim.x + threadIdx.x, a, b))
        gs_market_path(g, a, b);
}
