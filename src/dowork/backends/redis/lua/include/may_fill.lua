redis.call('DEL', P .. 'never')  -- see _MAY_FILL
