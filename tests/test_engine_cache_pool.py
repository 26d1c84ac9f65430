"""The key/value pool: pages handed out and taken back, shared only when asked."""
import numpy as np

from app.engine.cache_pool import CachePool


def test_reserve_gives_distinct_places_and_refuses_when_full():
    pool = CachePool(16 * 10, page=16)  # page 0 is scratch: 9 usable pages
    assert pool.size == 144 and pool.free_places == 144
    first_pages, first = pool.reserve(40)    # 3 pages
    second_pages, second = pool.reserve(90)  # 6 pages
    assert first.size == 40 and second.size == 90
    assert len(set(first) | set(second)) == 130
    assert min(first.min(), second.min()) >= 16  # never the scratch page
    assert pool.free_places == 0 and pool.reserve(1) is None
    pool.release(first_pages)
    assert pool.reserve(49) is None  # 4 pages, 3 free
    third_pages, third = pool.reserve(48)
    assert not set(third) & set(second)
    pool.release(second_pages)
    pool.release(third_pages)
    assert pool.free_places == 144


def test_places_of_a_page_are_consecutive():
    pool = CachePool(16 * 4, page=16)
    _, places = pool.reserve(20)
    assert np.array_equal(np.diff(places[:16]), np.ones(15))


def test_a_shared_page_returns_when_its_last_holder_gives_it_back():
    pool = CachePool(16 * 4, page=16)  # 3 usable pages
    prompt_pages, _ = pool.reserve(20)  # 2 pages
    pool.share(prompt_pages[:1])        # a second episode reads the first
    pool.release(prompt_pages)
    assert pool.free_places == 32       # the shared page is still held
    pool.release(prompt_pages[:1])
    assert pool.free_places == 48
