/* Each rank prints its rank and the communicator size; the ranks then
 * communicate (Allreduce of the ranks) so a broken PMI bootstrap cannot pass. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    int rank, size, sum = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d size %d sum %d\n", rank, size, sum);
    MPI_Finalize();
    return 0;
}
