"""Static analysis of pickle streams: parse the opcodes, emulate the machine, judge the names."""
