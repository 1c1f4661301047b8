# embed_bytes.cmake — included by the build-time embedders (schemas/embed_schemas.cmake,
# console/embed_assets.cmake; both run in script mode with `cmake -P`): one file's bytes as the
# body of a C char array, so the files stay the source of truth and no tool beyond CMake runs.
#
# kj_embed_bytes(<file> <bytes_var> <length_var>): <bytes_var> gets "0x..,0x..,...0x00" (16 a
# line, NUL-terminated: text files can be used as C strings), <length_var> the file's length
# in bytes (without the NUL).
function(kj_embed_bytes input bytes_var length_var)
  file(READ "${input}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  # 16 bytes a line (CMake regexes have no {n} repetition, so spell the pattern out)
  string(REPEAT "0x[0-9a-f][0-9a-f]," 16 line_pattern)
  string(REGEX REPLACE "(${line_pattern})" "\\1\n    " bytes "${bytes}")
  set(${bytes_var} "${bytes}0x00" PARENT_SCOPE)
  set(${length_var} "${len}" PARENT_SCOPE)
endfunction()

# kj_embed_write(<out.c> <text>): writes <text> to <out.c> only when it changed, so an
# unchanged input does not rebuild what depends on it.
function(kj_embed_write out text)
  file(WRITE "${out}.tmp" "${text}")
  file(COPY_FILE "${out}.tmp" "${out}" ONLY_IF_DIFFERENT)
  file(REMOVE "${out}.tmp")
endfunction()
