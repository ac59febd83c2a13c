local r = body()
flush()
return r
