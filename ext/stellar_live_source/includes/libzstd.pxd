# The parts of the vendored libzstd (ext/vendor/zstd, decoder only) the core uses.
# A module that cimports this needs ext/vendor/zstd on its include path and the
# decoder sources linked in; setup.py does both for _zstd_c only.

cdef extern from *:
    """
    #define ZSTD_STATIC_LINKING_ONLY  /* ZSTD_decompressBound: fine, the vendored version is pinned */
    """

cdef extern from "zstd.h" nogil:
    ctypedef struct ZSTD_DCtx:
        pass

    ctypedef struct ZSTD_inBuffer:
        const void* src
        size_t size
        size_t pos

    ctypedef struct ZSTD_outBuffer:
        void* dst
        size_t size
        size_t pos

    ctypedef enum ZSTD_ResetDirective:
        ZSTD_reset_session_only
        ZSTD_reset_parameters
        ZSTD_reset_session_and_parameters

    ctypedef enum ZSTD_ErrorCode:
        ZSTD_error_prefix_unknown
        ZSTD_error_srcSize_wrong

    unsigned long long ZSTD_CONTENTSIZE_UNKNOWN
    unsigned long long ZSTD_CONTENTSIZE_ERROR

    const char* ZSTD_versionString()
    unsigned ZSTD_isError(size_t code)
    ZSTD_ErrorCode ZSTD_getErrorCode(size_t code)
    const char* ZSTD_getErrorName(size_t code)

    unsigned long long ZSTD_getFrameContentSize(const void* src, size_t srcSize)
    size_t ZSTD_findFrameCompressedSize(const void* src, size_t srcSize)
    unsigned long long ZSTD_decompressBound(const void* src, size_t srcSize)

    ZSTD_DCtx* ZSTD_createDCtx()
    size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx)
    size_t ZSTD_sizeof_DCtx(const ZSTD_DCtx* dctx)
    size_t ZSTD_DCtx_reset(ZSTD_DCtx* dctx, ZSTD_ResetDirective reset)
    size_t ZSTD_decompressStream(ZSTD_DCtx* zds, ZSTD_outBuffer* output, ZSTD_inBuffer* input)
