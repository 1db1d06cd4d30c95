// The kernels of grid.cu run on the CPU, one thread after another.
//
// Built with a C++ compiler (-ffp-contract=off) by the tests, which call
// gs_grid_host through ctypes and compare it with the NumPy backend: the
// arithmetic in gridstress.cuh is then checked on machines without a GPU.
// The phases and the index arithmetic are the kernel's; only the thread
// scheduling differs (the phases of a thread block run one after the other,
// which is what the kernel's barriers guarantee).
#include <algorithm>
#include <vector>
#include "gridstress.cuh"

#include <cstddef>

// The argument block's layout, checked against the one the Python side packs.
extern "C" long gs_args_size() { return (long)sizeof(GsArgs); }
// Each field's offset, in ARGS_DTYPE's order (GS_ARGS_FIELDS); returns the count.
extern "C" int gs_args_offsets(long* out) {
    int i = 0;
#define GS_OFFSET(field) out[i++] = (long)offsetof(GsArgs, field);
    GS_ARGS_FIELDS(GS_OFFSET)
#undef GS_OFFSET
    return i;
}
// The ratio tests of the period loop, for the tests to check against "/".
extern "C" int gs_ratio_below_host(double x, double y, double limit) {
    return gs_ratio_below(x, y, limit);
}
extern "C" int gs_ratio_above_host(double x, double y, double limit) {
    return gs_ratio_above(x, y, limit);
}
// Bytes of shared memory a thread block of this launch uses.
extern "C" long gs_shared_bytes(const GsArgs* args) { return 8 * gs_shared_doubles(*args); }

extern "C" int gs_grid_host(const GsArgs* args, long n_blocks, int threads) {
    const GsArgs& g = *args;
    std::vector<double> table(gs_shared_doubles(g));
    std::vector<GsCell> cells(threads);
    std::vector<int> cell_a(threads), cell_b(threads);
    std::vector<char> mine(threads);
    for (long bi = 0; bi < n_blocks; ++bi) {
        const GsBlock blk = gs_block(g, (int)bi);
        for (int t = 0; t < threads; ++t) {
            mine[t] = gs_path_cell(g, blk, t, cell_a[t], cell_b[t]);
            if (mine[t]) gs_cell_start(g, blk, cell_a[t], cell_b[t], cells[t]);
        }
        for (int u = 0; u < gs_factor_items(g); ++u)
            gs_build_factors(g, blk, u, table.data());
        for (int l0 = 0; l0 < g.n_loans; l0 += g.loan_tile) {
            const int tile_len = std::min(g.loan_tile, g.n_loans - l0);
            // Poisoned: a read of a table entry no thread built shows as NaN.
            std::fill(table.begin(), table.begin() + 2 * gs_table_size(g), GS_NAN);
            for (int u = 0; u < g.na_block * tile_len; ++u)
                gs_build_tables(g, blk, l0, tile_len, u, table.data());
#if GS_RENT_SHAPE
            if (g.JA > 0) {
                for (int u = 0; u < g.na_block * tile_len * (g.K1 - 1); ++u)
                    gs_build_market_appraisal(g, blk, l0, tile_len, u, table.data());
                for (int u = 0; u < g.na_block * tile_len; ++u)
                    gs_build_market_free_path(g, blk, l0, tile_len, u, table.data());
            }
#endif
            for (int t = 0; t < threads; ++t)
                if (mine[t])
                    gs_cell_loans(g, blk, l0, tile_len, cell_a[t], cell_b[t], table.data(),
                                  cells[t]);
        }
        for (int t = 0; t < threads; ++t)
            if (mine[t]) gs_cell_finish(g, blk, cell_a[t], cell_b[t], cells[t]);
    }
    return 0;
}

extern "C" int gs_recover_host(const GsArgs* args, long n_blocks, int threads) {
    const GsArgs& g = *args;
    std::vector<double> shared(gs_recover_shared_doubles(g));
    std::vector<GsCell> cells(threads);
    for (long bi = 0; bi < n_blocks; ++bi) {
        const GsRecoverBlock r = gs_recover_block(g, bi);
        for (int t = 0; t < threads; ++t)
            if (gs_recover_mine(g, r, t)) gs_recover_start(g, r, t, cells[t]);
        for (int l0 = 0; l0 < g.n_loans; l0 += g.rec_tile) {
            const int tile_len = std::min(g.rec_tile, g.n_loans - l0);
            std::fill(shared.begin(), shared.end(), GS_NAN);  // as above
            for (int u = 0; u < GS_NREC * tile_len * g.rb; ++u)
                gs_copy_record(g, r, l0, tile_len, u, shared.data());
            for (int t = 0; t < threads; ++t)
                if (gs_recover_mine(g, r, t))
                    gs_recover_tile(g, r, l0, tile_len, t, shared.data(), cells[t]);
        }
        for (int t = 0; t < threads; ++t)
            if (gs_recover_mine(g, r, t)) gs_recover_finish(g, r, t, cells[t]);
    }
    return 0;
}

// Blocks of the recovery kernel's launch, and the shared memory each uses.
extern "C" long gs_recover_blocks_host(const GsArgs* args) { return gs_recover_blocks(*args); }
extern "C" long gs_recover_shared_bytes(const GsArgs* args) {
    return 8 * gs_recover_shared_doubles(*args);
}

// The market step's two kernels (grid.cu), block after block.
extern "C" int gs_tables_host(const GsArgs* args, long n_blocks, int threads) {
    const GsArgs& g = *args;
    std::vector<double> rent(gs_tables_shared_doubles(g));
    for (long bi = 0; bi < n_blocks; ++bi) {
        std::fill(rent.begin(), rent.end(), GS_NAN);  // as above
        for (int r = 0; r < gs_factors_per_a(g); ++r) gs_market_factor(g, (int)bi, r, rent.data());
        for (int l = 0; l < g.n_loans; ++l) gs_market_loan_tables(g, (int)bi, l, rent.data());
#if GS_RENT_SHAPE
        if (g.JA > 0)
            for (int u = 0; u < g.n_loans * (g.K1 - 1); ++u)
                gs_market_loan_appraisal(g, (int)bi, u, rent.data());
#endif
    }
    return 0;
}

extern "C" int gs_market_host(const GsArgs* args, long n_blocks, int threads) {
    const GsArgs& g = *args;
    for (long u = 0; u < n_blocks * threads; ++u) {
        int a, b;
        if (gs_market_cell(g, u, a, b)) gs_market_path(g, a, b);
    }
    return 0;
}

// Bytes of the tables kernel's shared memory.
extern "C" long gs_tables_shared_bytes(const GsArgs* args) {
    return 8 * gs_tables_shared_doubles(*args);
}

// Doubles of the market kernel's tables for this launch's a range.
extern "C" long gs_market_table_doubles_host(const GsArgs* args) {
    return gs_market_table_doubles(*args);
}
