import trio


async def test_trio_mode_runs(autojump_clock):
    await trio.sleep(5)
    assert trio.current_time() == 5
