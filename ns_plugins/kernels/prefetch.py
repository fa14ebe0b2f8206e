"""``prefetch_row(arr, row)`` for numba kernels: LLVM's prefetch over one row of a 2-D array."""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch_row"]


@intrinsic
def prefetch_row(typingctx, arr, row):
    """Start loading every cache line of ``arr[row]`` (2-D, C-contiguous). Rows are drawn at
    random from tables far larger than the caches; asking for all of a step's rows up front lets
    their loads overlap instead of stalling one after another."""

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero])
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ptr, i8p)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        row_bytes = builder.extract_value(ary.strides, 0)
        line = context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, zero, row_bytes, line) as (offset, _):
            # read access, keep in all cache levels, data cache
            args = [builder.gep(base, [offset]), i32(0), i32(3), i32(1)]
            builder.call(fn, args)
        return context.get_dummy_value()

    return types.void(arr, row), codegen
