std = "lua54"
max_line_length = 120
files["spec/**/*.lua"] = { std = "+busted", max_line_length = 140 }
exclude_files = { "spec/.tmp/**", "build/**" }
